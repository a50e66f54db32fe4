// Flex Consumption plan and the Linux Python 3.11 function app.
//
// Flex Consumption keeps the runtime, scale and deployment source in functionAppConfig; the app
// settings that other plans use for them (FUNCTIONS_WORKER_RUNTIME, FUNCTIONS_EXTENSION_VERSION,
// WEBSITE_RUN_FROM_PACKAGE, WEBSITE_CONTENT*, ...) are not supported there and are not set
// (Functions app settings reference, "Flex Consumption plan deprecations").

param planName string
param appName string
param location string
param tags object
@description('Value of the azd-service-name tag: the service name in azure.yaml.')
param serviceName string
@description('Resource id of the app\'s user-assigned identity.')
param identityId string
param storageBlobEndpoint string
param deploymentContainerName string
param maximumInstanceCount int
param instanceMemoryMB int
@description('Always-ready instances of the durable group (orchestrators and activities); 0 scales it to zero.')
param durableAlwaysReadyInstances int
@description('Every app setting; the config resource replaces the whole set on each deployment.')
param appSettings object
@description('Subnet (delegated to Microsoft.App/environments) the app is integrated with; empty: none. With it, the app reaches storage and Key Vault through their private endpoints.')
param virtualNetworkSubnetId string = ''

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    // Key Vault references resolve with this identity (it holds Key Vault Secrets User).
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        // Durable docs ("Flex Consumption plan") recommend one always-ready instance for the
        // durable group, so orchestrations do not wait for a cold start.
        alwaysReady: durableAlwaysReadyInstances > 0 ? [
          {
            name: 'durable'
            instanceCount: durableAlwaysReadyInstances
          }
        ] : []
      }
    }
  }
}

resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: app
  name: 'appsettings'
  properties: appSettings
}

// azd deploys with an Entra token; publishing with basic credentials stays off.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = app.name
output defaultHostName string = app.properties.defaultHostName
