// The Entra ID app registration that callers of the HTTP API get tokens for (issue 15, README
// "Callers and policies"). Its Application ID URI and client id are the token audience
// (WORKFLOW_AUTH_AUDIENCE); its app roles say who may start workflows and who sees every caller's.
// appRoleAssignmentRequired: only principals given a role (a Logic App's managed identity, a team's
// service principal, a user or group) can get a token for the app at all.
//
// Microsoft Graph Bicep extension (generally available since July 2025, Bicep 0.36.1 or later). The
// deployer needs the right to create applications (e.g. Application Developer); main.bicep deploys
// this module only with entraAppRegistration = 'true'.
extension microsoftGraphV1 // infra/bicepconfig.json: microsoftgraph/v1.0:1.0.0

@description('Unique name of the registration: deploying again updates the same application.')
param uniqueName string

param displayName string

@description('Application ID URI, e.g. api://<name>: the audience Logic Apps put in their HTTP action.')
param identifierUri string

// Fixed ids: a role's id must not change between deployments, or its assignments would be lost.
var appRoles = [
  {
    id: guid(uniqueName, 'Workflows.Run')
    value: 'Workflows.Run'
    displayName: 'Start workflows'
    description: 'Start Databricks job workflows and see and cancel its own (the caller policy may narrow what it runs).'
    allowedMemberTypes: ['Application', 'User']
    isEnabled: true
  }
  {
    id: guid(uniqueName, 'Workflows.Admin')
    value: 'Workflows.Admin'
    displayName: 'Administer workflows'
    description: 'See and cancel every caller\'s workflows; not limited by the caller policy.'
    allowedMemberTypes: ['Application', 'User']
    isEnabled: true
  }
]

resource application 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: 'AzureADMyOrg'
  identifierUris: [identifierUri]
  api: {
    requestedAccessTokenVersion: 2
  }
  appRoles: appRoles
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: application.appId
  appRoleAssignmentRequired: true
}

output appId string = application.appId
output identifierUri string = identifierUri
output servicePrincipalId string = servicePrincipal.id
output appRoleValues array = [for role in appRoles: role.value]
