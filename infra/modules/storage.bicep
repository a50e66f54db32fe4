// The app's storage account: the Functions host (AzureWebJobsStorage), the Durable task hub (its
// tables, queues and lease/large-message blobs, which the extension creates itself), the
// deployment package container, and the app's own queues.
//
// Shared keys are off: every client authenticates with the app's managed identity (the host and
// Durable Functions through AzureWebJobsStorage__credential/__clientId, the deployment through
// functionAppConfig.deployment.storage.authentication, the app's queue client through
// azure-identity). Microsoft's Flex Consumption Durable Functions azd sample
// (Azure-Samples/durable-functions-quickstart-python-azd) runs the same way, and turns public
// network access off the same way in its private-network mode.

param name string
param location string
param tags object
param deploymentContainerName string
@description('Queues created up front, so the first message or poisoned message never waits for a create call.')
param queueNames array
@description('false (private networking): reachable only through the private endpoints of private-network.bicep.')
param publicNetworkAccess bool = true

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: publicNetworkAccess ? 'Enabled' : 'Disabled'
    networkAcls: publicNetworkAccess ? {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    } : {
      defaultAction: 'Deny'
      bypass: 'None'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

// The account's own endpoints (https://<name>.<service>.<cloud's storage suffix>/), so no
// public-Azure host name is assumed anywhere.
var endpoints = storage.properties.primaryEndpoints

output name string = storage.name
// Ends with a slash: the deployment container's URL is appended to it.
output blobEndpoint string = endpoints.blob
// Service URIs for AzureWebJobsStorage__<service>ServiceUri, without the trailing slash.
output blobServiceUri string = substring(endpoints.blob, 0, length(endpoints.blob) - 1)
output queueServiceUri string = substring(endpoints.queue, 0, length(endpoints.queue) - 1)
output tableServiceUri string = substring(endpoints.table, 0, length(endpoints.table) - 1)
