// Key Vault in Azure RBAC mode for the secrets the operator adds after deployment (docs/deploy.md):
// the webhook password, an optional Event Grid topic key, an optional Databricks PAT. The template
// creates no secret: app settings hold Key Vault references to them.

param name string
param location string
param tags object

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    publicNetworkAccess: 'Enabled'
  }
}

output name string = vault.name
// Ends with a slash, e.g. https://kv-xyz.vault.azure.net/
output uri string = vault.properties.vaultUri
