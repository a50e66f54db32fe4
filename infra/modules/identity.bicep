// The app's user-assigned managed identity.
//
// User-assigned rather than system-assigned because it exists before the function app does:
// - its client id goes into app settings (AzureWebJobsStorage__clientId,
//   DATABRICKS_MANAGED_IDENTITY_CLIENT_ID, APPLICATIONINSIGHTS_AUTHENTICATION_STRING) in the same
//   deployment that creates the app;
// - its roles on storage, Key Vault and App Insights are assigned before the app first starts, so
//   the host's first start can reach its storage and resolve Key Vault references (App Service
//   docs, "Access vaults with a user-assigned identity");
// - it outlives the app: deleting and recreating the app keeps the Databricks service principal
//   registered for this identity's application id.

param name string
param location string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
