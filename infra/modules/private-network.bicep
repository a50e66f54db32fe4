// Private networking (PRIVATE_NETWORKING=true): a virtual network with one subnet the function
// app is integrated with and one for private endpoints; private endpoints for the storage account
// (blob, queue and table: the host, the deployment package, Durable Functions and the app's
// queues) and for Key Vault; and the private DNS zones that make their usual host names resolve
// to those endpoints inside the network. storage.bicep and keyvault.bicep turn public network
// access off in this mode, so these endpoints are the only way in.
//
// Zone names come from the cloud's own suffixes (environment()), not from public-Azure literals.

param vnetName string
param location string
param tags object
@description('The network\'s address space; the app subnet is its first /24, the private endpoint subnet its second.')
param addressSpace string
param storageAccountName string
param keyVaultName string

var appSubnetName = 'app'
var endpointSubnetName = 'private-endpoints'
// environment().suffixes.keyvaultDns is '.vault.azure.net' in public Azure; the private link zone
// is privatelink.vaultcore.<same suffix>.
var keyVaultZone = 'privatelink${replace(environment().suffixes.keyvaultDns, '.vault.', '.vaultcore.')}'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressSpace
      ]
    }
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: cidrSubnet(addressSpace, 24, 0)
          // Flex Consumption integrates with a subnet delegated to Microsoft.App/environments.
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: endpointSubnetName
        properties: {
          addressPrefix: cidrSubnet(addressSpace, 24, 1)
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

var endpoints = [
  {
    name: 'blob'
    target: storage.id
    zone: 'privatelink.blob.${environment().suffixes.storage}'
  }
  {
    name: 'queue'
    target: storage.id
    zone: 'privatelink.queue.${environment().suffixes.storage}'
  }
  {
    name: 'table'
    target: storage.id
    zone: 'privatelink.table.${environment().suffixes.storage}'
  }
  {
    name: 'vault'
    target: vault.id
    zone: keyVaultZone
  }
]

resource zones 'Microsoft.Network/privateDnsZones@2024-06-01' = [for endpoint in endpoints: {
  name: endpoint.zone
  location: 'global'
  tags: tags
}]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (endpoint, i) in endpoints: {
  parent: zones[i]
  name: vnet.name
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [for endpoint in endpoints: {
  name: 'pe-${endpoint.name}-${vnetName}'
  location: location
  tags: tags
  properties: {
    subnet: {
      // Through vnet.id, so each endpoint waits for the network (the subnets are declared inside it).
      id: '${vnet.id}/subnets/${endpointSubnetName}'
    }
    privateLinkServiceConnections: [
      {
        name: endpoint.name
        properties: {
          privateLinkServiceId: endpoint.target
          groupIds: [
            endpoint.name
          ]
        }
      }
    ]
  }
}]

resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (endpoint, i) in endpoints: {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: endpoint.name
        properties: {
          privateDnsZoneId: zones[i].id
        }
      }
    ]
  }
}]

output appSubnetId string = '${vnet.id}/subnets/${appSubnetName}'
