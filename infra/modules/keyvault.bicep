// Key Vault in Azure RBAC mode for the secrets the operator adds after deployment (docs/deploy.md):
// the webhook password, an optional Event Grid topic key, an optional Databricks PAT. The template
// creates no secret: app settings hold Key Vault references to them.
//
// Purge protection is on: a deleted vault, or a deleted secret, stays recoverable for the whole
// retention period and nobody (not even an Owner) can purge it sooner. It cannot be turned off
// again, and `azd down --purge` cannot purge this vault: its name stays taken for the retention
// period (docs/deploy.md, "Remove").

param name string
param location string
param tags object
@description('false (private networking): reachable only through the private endpoint of private-network.bicep.')
param publicNetworkAccess bool = true

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
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: publicNetworkAccess ? 'Enabled' : 'Disabled'
    // With public access disabled, only the private endpoint reaches the vault (the firewall's
    // rules and trusted-service bypass apply only while public access is enabled).
    networkAcls: {
      defaultAction: publicNetworkAccess ? 'Allow' : 'Deny'
      bypass: 'AzureServices'
    }
  }
}

output name string = vault.name
// Ends with a slash, e.g. https://kv-xyz.vault.azure.net/
output uri string = vault.properties.vaultUri
