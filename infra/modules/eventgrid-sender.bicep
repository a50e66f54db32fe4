// EventGrid Data Sender for the app's identity on an existing Event Grid topic (in any resource
// group the deployer may assign roles in), so notifyCompletion can publish with a token instead
// of the topic's access key (WORKFLOW_COMPLETION_TOPIC_KEY empty).

param topicName string
@description('Principal (object) id of the app\'s user-assigned identity.')
param appPrincipalId string

// Azure built-in role (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var roles = {
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'
}

resource topic 'Microsoft.EventGrid/topics@2022-06-15' existing = {
  name: topicName
}

resource appEventGridDataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, appPrincipalId, roles.eventGridDataSender)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}
