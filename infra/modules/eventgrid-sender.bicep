// EventGrid Data Sender for the app's identity on an existing Event Grid target (in any resource
// group the deployer may assign roles in), so notifyCompletion can publish with a token instead of
// an access key (WORKFLOW_COMPLETION_TOPIC_KEY empty). The target is whatever
// COMPLETION_TOPIC_RESOURCE_ID names: a custom topic, a domain or one of its topics, or an Event
// Grid namespace or one of its topics. The role is assigned on exactly that resource.

@description('Resource id: .../providers/Microsoft.EventGrid/<topics|domains|namespaces>/<name>[/topics/<name>].')
param topicResourceId string
@description('Principal (object) id of the app\'s user-assigned identity.')
param appPrincipalId string

// Azure built-in role (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var roles = {
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'
}

// ['', 'subscriptions', <id>, 'resourceGroups', <group>, 'providers', 'Microsoft.EventGrid', <type>, <name>, ('topics', <name>)]
var parts = split(topicResourceId, '/')
var kind = toLower(length(parts) == 11 ? '${parts[7]}/${parts[9]}' : parts[7])
var parentName = parts[8]
var childName = last(parts)
var knownKinds = ['topics', 'domains', 'domains/topics', 'namespaces', 'namespaces/topics']
var checkedKind = contains(knownKinds, kind) ? kind : fail('COMPLETION_TOPIC_RESOURCE_ID must name an Event Grid topic, domain, domain topic, namespace or namespace topic.')

resource topic 'Microsoft.EventGrid/topics@2022-06-15' existing = if (checkedKind == 'topics') {
  name: parentName
}

resource domain 'Microsoft.EventGrid/domains@2022-06-15' existing = if (checkedKind == 'domains') {
  name: parentName
}

resource domainTopic 'Microsoft.EventGrid/domains/topics@2022-06-15' existing = if (checkedKind == 'domains/topics') {
  name: '${parentName}/${childName}'
}

resource namespace 'Microsoft.EventGrid/namespaces@2025-02-15' existing = if (checkedKind == 'namespaces') {
  name: parentName
}

resource namespaceTopic 'Microsoft.EventGrid/namespaces/topics@2025-02-15' existing = if (checkedKind == 'namespaces/topics') {
  name: '${parentName}/${childName}'
}

resource topicSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (checkedKind == 'topics') {
  name: guid(topicResourceId, appPrincipalId, roles.eventGridDataSender)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource domainSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (checkedKind == 'domains') {
  name: guid(topicResourceId, appPrincipalId, roles.eventGridDataSender)
  scope: domain
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource domainTopicSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (checkedKind == 'domains/topics') {
  name: guid(topicResourceId, appPrincipalId, roles.eventGridDataSender)
  scope: domainTopic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource namespaceSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (checkedKind == 'namespaces') {
  name: guid(topicResourceId, appPrincipalId, roles.eventGridDataSender)
  scope: namespace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource namespaceTopicSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (checkedKind == 'namespaces/topics') {
  name: guid(topicResourceId, appPrincipalId, roles.eventGridDataSender)
  scope: namespaceTopic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}
