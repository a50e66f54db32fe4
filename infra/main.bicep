// `azd up` provisions this file (with main.parameters.json), then deploys the app to it.
// What it creates and the steps after it: docs/deploy.md.
//
// App settings: every setting in the README settings table is set here (tests/infra checks the
// list against tools.settings_table.all_settings()), with parameter defaults equal to the code's
// defaults. Each parameter takes the azd environment value of the same name as the setting
// (`azd env set WORKFLOW_POLL_INTERVAL_SECONDS 120`, then `azd provision`). The template holds
// no secret: secret settings are Key Vault references to secrets the operator adds.

targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------
// azd environment

@minLength(1)
@maxLength(64)
@description('Name of the azd environment: the resource group is rg-<name>, other names derive from it.')
param environmentName string

@minLength(1)
@description('Region of every resource: one that offers Flex Consumption (az functionapp list-flexconsumption-locations).')
// The regions of Microsoft's Flex Consumption Durable Functions azd sample
// (Azure-Samples/durable-functions-quickstart-python-azd), less its canary region. azd offers only
// these in its region prompt, and ARM refuses any other before creating anything.
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of whoever runs azd (AZURE_PRINCIPAL_ID): gets Key Vault Secrets Officer on the vault to add the secrets. Empty: none.')
param principalId string = ''

@allowed(['User', 'ServicePrincipal', 'Group'])
param principalType string = 'User'

// ---------------------------------------------------------------------------------------------
// Hosting (azd turns the environment's strings into the int and bool parameters)

@minValue(40)
@maxValue(1000)
@description('Most instances the app scales out to: Flex Consumption accepts 40 to 1000.')
param maximumInstanceCount int = 100

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@minValue(0)
@maxValue(1000)
@description('Always-ready instances for orchestrators and activities (Microsoft recommends 1 for Durable Functions on Flex Consumption; 0 scales to zero and bills nothing while idle). At most maximumInstanceCount.')
param durableAlwaysReadyInstances int = 1

@minLength(3)
@maxLength(45)
@description('Durable task hub name (TASKHUB_NAME): letters and digits, starting with a letter (checked below).')
param taskHubName string = 'DatabricksJobs'

// ---------------------------------------------------------------------------------------------
// Network (README "Deployment modes")

@description('true: the app reaches storage and Key Vault only through private endpoints in a virtual network it is integrated with, and both refuse public network access.')
param privateNetworking bool = false

@description('Address space of that virtual network (a /16 to /22 that does not overlap networks you peer with); the app subnet and the private endpoint subnet are its first two /24s.')
param privateNetworkAddressSpace string = '10.40.0.0/16'

// ---------------------------------------------------------------------------------------------
// App settings (README "Settings"; defaults are the code's)

@minLength(8)
@description('DATABRICKS_HOST: workspace URL, e.g. https://adb-1234567890123456.7.azuredatabricks.net')
param databricksHost string

@allowed(['2.1', '2.2'])
param databricksJobsApiVersion string = '2.1'

@allowed(['managed_identity', 'default_azure_credential', 'key_vault', 'pat'])
@description('DATABRICKS_AUTH. managed_identity uses the app\'s identity; key_vault and pat use the PAT stored as secret databricks-pat.')
param databricksAuth string = 'managed_identity'

param databricksKeyVaultCacheSeconds string = '3600'
param databricksAzureWorkspaceResourceId string = ''
param databricksNotificationDestinationId string = ''
param databricksHttpTimeoutSeconds string = '30'
param databricksRetryMaxSeconds string = '120'
param databricksRunNowRate string = '20'
param databricksStartBudgetStore string = 'auto'

param workflowDefaultTimeoutSeconds string = '86400'
param workflowPollIntervalSeconds string = '300'
param workflowWebhookPollIntervalSeconds string = '86400'
param workflowPollsPerExecution string = '20'
param workflowMaxBodyBytes string = '65536'

@allowed(['true', 'false'])
param workflowDeleteJobOnCompletion string = 'false'

@description('Tick of the workspace run watcher in seconds (a divisor of 60); 0 turns it off.')
@allowed(['0', '5', '6', '10', '12', '15', '20', '30', '60'])
param workflowRunWatcherIntervalSeconds string = '15'

param workflowHistoryRetentionDays string = '30'
@description('Six-field NCRONTAB, in UTC (Flex Consumption has no time zone setting).')
param workflowPurgeSchedule string = '0 0 3 * * *'

@description('Queue that starts workflows; created with its -poison queue.')
param workflowRequestQueue string = 'workflow-requests'
param workflowInvalidEventQueue string = 'workflow-requests-invalid'
@description('Optional queue for completion events; created when set.')
param workflowCompletionQueue string = ''

@description('EVENTGRID_BLOB_CREATED_WORKFLOW as a JSON object (edit it in main.parameters.json); {} leaves it unset.')
param eventGridBlobCreatedWorkflow object = {}

param workflowCompletionTopicEndpoint string = ''
param workflowCompletionEventSource string = '/workflows/create-job-and-run'

@description('DATABRICKS_WEBHOOK_USERNAME. Set: DATABRICKS_WEBHOOK_PASSWORD becomes a reference to secret databricks-webhook-password. Empty: the webhook endpoint refuses every call.')
param databricksWebhookUsername string = ''

// ---------------------------------------------------------------------------------------------
// Callers (README "Callers and policies"): Entra ID tokens and the caller policy. All empty: one
// team, function keys.

@allowed(['true', 'false'])
@description('true: create the Entra ID app registration callers get tokens for (modules/entra-app.bicep: app roles Workflows.Run and Workflows.Admin, assignment required; the deployer needs the right to create applications) and require its tokens. false: set the two settings below yourself, or leave them empty for function keys.')
param entraAppRegistration string = 'false'

@description('WORKFLOW_AUTH_TENANT_ID: tenant whose tokens the HTTP API accepts. Empty with entraAppRegistration: this deployment\'s tenant.')
param workflowAuthTenantId string = ''

@description('WORKFLOW_AUTH_AUDIENCE: accepted audiences, comma-separated (client id, Application ID URI). Empty with entraAppRegistration: the new registration\'s.')
param workflowAuthAudience string = ''

param workflowAuthMetadataUrl string = ''

@description('WORKFLOW_CALLER_POLICIES as a JSON object (edit it in main.parameters.json); {} leaves it unset: one team.')
param workflowCallerPolicies object = {}

// ---------------------------------------------------------------------------------------------
// Completion topic access (optional)

@description('Resource id of the Event Grid target of WORKFLOW_COMPLETION_TOPIC_ENDPOINT (a topic, a domain, a domain topic, a namespace or a namespace topic): the app\'s identity gets EventGrid Data Sender on it. Empty: no role.')
param completionTopicResourceId string = ''

@allowed(['identity', 'key'])
@description('key: WORKFLOW_COMPLETION_TOPIC_KEY references secret completion-topic-key; identity: the app publishes with its identity.')
param completionTopicAuth string = 'identity'

// ---------------------------------------------------------------------------------------------
// Names

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
// The service name in azure.yaml; azd finds the app by this tag.
var serviceName = 'app'
var deploymentContainerName = 'app-package-${resourceToken}'

// Secrets the operator adds to the vault after deployment (docs/deploy.md); never created here.
var secretNames = {
  databricksPat: 'databricks-pat'
  webhookPassword: 'databricks-webhook-password'
  completionTopicKey: 'completion-topic-key'
}

var requestQueues = [workflowRequestQueue, '${workflowRequestQueue}-poison']
var invalidEventQueues = empty(workflowInvalidEventQueue) ? [] : [workflowInvalidEventQueue]
var completionQueues = empty(workflowCompletionQueue) ? [] : [workflowCompletionQueue]

var completionTopicIdParts = split(completionTopicResourceId, '/')
// ARM evaluates only the chosen branch of a conditional, so an empty id never indexes the parts.
var completionTopicSubscriptionId = empty(completionTopicResourceId) ? subscription().subscriptionId : completionTopicIdParts[2]
var completionTopicResourceGroup = empty(completionTopicResourceId) ? 'rg-${environmentName}' : completionTopicIdParts[4]
// A CloudEvent sent to an Event Grid domain goes to the domain topic its `source` names (Event Grid
// docs, "Publishing to an event domain"): with a domain topic's id, the source must be its name.
// A conditional, not &&: only the chosen branch indexes the parts.
var completionTopicIsDomainTopic = length(completionTopicIdParts) == 11 ? toLower('${completionTopicIdParts[7]}/${completionTopicIdParts[9]}') == 'domains/topics' : false
var completionEventSource = (completionTopicIsDomainTopic && workflowCompletionEventSource != last(completionTopicIdParts)) ? fail('WORKFLOW_COMPLETION_EVENT_SOURCE must be the domain topic name (the last segment of COMPLETION_TOPIC_RESOURCE_ID): Event Grid routes a CloudEvent to the domain topic its source names.') : workflowCompletionEventSource

// Checks ARM runs while it validates the template, before it creates anything (fail() in a
// variable; Bicep has no pattern decorator).
var letters = 'abcdefghijklmnopqrstuvwxyz'
var taskHubNameBadCharacters = filter(map(range(0, length(taskHubName)), i => substring(taskHubName, i, 1)), c => !contains('${letters}0123456789', toLower(c)))
var checkedTaskHubName = (empty(taskHubNameBadCharacters) && contains(letters, toLower(first(taskHubName)))) ? taskHubName : fail('TASKHUB_NAME must be letters and digits, starting with a letter (Durable Functions task hub names).')
var checkedAlwaysReadyInstances = durableAlwaysReadyInstances <= maximumInstanceCount ? durableAlwaysReadyInstances : fail('FUNCTION_DURABLE_ALWAYS_READY_INSTANCES cannot exceed FUNCTION_MAXIMUM_INSTANCE_COUNT.')

// ---------------------------------------------------------------------------------------------
// Resources

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    queueNames: concat(requestQueues, invalidEventQueues, completionQueues)
    publicNetworkAccess: !privateNetworking
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    publicNetworkAccess: !privateNetworking
  }
}

// Private networking only: the virtual network, private endpoints for storage (blob, queue,
// table) and Key Vault, and their private DNS zones.
module privateNetwork 'modules/private-network.bicep' = if (privateNetworking) {
  name: 'private-network'
  scope: rg
  params: {
    vnetName: 'vnet-${resourceToken}'
    location: location
    tags: tags
    addressSpace: privateNetworkAddressSpace
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
  }
}

module entraApp 'modules/entra-app.bicep' = if (entraAppRegistration == 'true') {
  name: 'entra-app'
  scope: rg
  params: {
    uniqueName: 'databricks-workflows-${resourceToken}'
    displayName: 'Databricks workflows (${environmentName})'
    identifierUri: 'api://databricks-workflows-${resourceToken}'
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appPrincipalId: identity.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

// The topic may live in another resource group or subscription of the tenant.
module completionTopicSender 'modules/eventgrid-sender.bicep' = if (!empty(completionTopicResourceId)) {
  name: 'completion-topic-sender'
  scope: resourceGroup(completionTopicSubscriptionId, completionTopicResourceGroup)
  params: {
    topicResourceId: completionTopicResourceId
    appPrincipalId: identity.outputs.principalId
  }
}

// App Service resolves these before the app starts, with keyVaultReferenceIdentity; a reference
// to a secret that does not exist yet stays unresolved (the setting holds the reference text).
var secretReferencePrefix = '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.uri}secrets/'
var secretReferences = {
  databricksPat: '${secretReferencePrefix}${secretNames.databricksPat}/)'
  webhookPassword: '${secretReferencePrefix}${secretNames.webhookPassword}/)'
  completionTopicKey: '${secretReferencePrefix}${secretNames.completionTopicKey}/)'
}

// app-settings:start (tests/infra reads the keys between these markers)
var hostSettings = {
  // Identity-based host storage; also the Durable task hub (host.json storageProvider
  // connectionName) and the queue trigger's connection. The service URIs come from the account
  // itself, so they are right in every cloud (an account name alone means public Azure's hosts).
  AzureWebJobsStorage__accountName: storage.outputs.name
  AzureWebJobsStorage__blobServiceUri: storage.outputs.blobServiceUri
  AzureWebJobsStorage__queueServiceUri: storage.outputs.queueServiceUri
  AzureWebJobsStorage__tableServiceUri: storage.outputs.tableServiceUri
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.outputs.clientId
  TASKHUB_NAME: checkedTaskHubName
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.outputs.clientId};Authorization=AAD'
  // The Python worker makes each invocation's trace context (sent by the host in every telemetry
  // mode) the parent of the app's OpenTelemetry spans. The host stays in its default Application
  // Insights mode (host.json has no telemetryMode): there it still sends the worker's log records
  // to `traces`, which telemetry/setup.py relies on; in OpenTelemetry mode this setting would make
  // the host drop them (docs/operations.md, "Switching it on").
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
  // azure-identity's DefaultAzureCredential picks the user-assigned identity by this (the app has
  // no system-assigned one); notifyCompletion's Event Grid token relies on it.
  AZURE_CLIENT_ID: identity.outputs.clientId
}

var appSettings = {
  DATABRICKS_HOST: databricksHost
  DATABRICKS_JOBS_API_VERSION: databricksJobsApiVersion
  DATABRICKS_AUTH: databricksAuth
  DATABRICKS_MANAGED_IDENTITY_CLIENT_ID: identity.outputs.clientId
  DATABRICKS_KEY_VAULT_URL: keyVault.outputs.uri
  DATABRICKS_KEY_VAULT_SECRET_NAME: secretNames.databricksPat
  DATABRICKS_KEY_VAULT_CACHE_SECONDS: databricksKeyVaultCacheSeconds
  DATABRICKS_TOKEN: databricksAuth == 'pat' ? secretReferences.databricksPat : ''
  DATABRICKS_AZURE_WORKSPACE_RESOURCE_ID: databricksAzureWorkspaceResourceId
  DATABRICKS_NOTIFICATION_DESTINATION_ID: databricksNotificationDestinationId
  DATABRICKS_HTTP_TIMEOUT_SECONDS: databricksHttpTimeoutSeconds
  DATABRICKS_RETRY_MAX_SECONDS: databricksRetryMaxSeconds
  DATABRICKS_RUN_NOW_RATE: databricksRunNowRate
  DATABRICKS_START_BUDGET_STORE: databricksStartBudgetStore
  // ARM's name for the cloud this deployment runs in (AzureCloud, AzureUSGovernment, AzureChinaCloud).
  AZURE_CLOUD: environment().name
  WORKFLOW_DEFAULT_TIMEOUT_SECONDS: workflowDefaultTimeoutSeconds
  WORKFLOW_POLL_INTERVAL_SECONDS: workflowPollIntervalSeconds
  WORKFLOW_WEBHOOK_POLL_INTERVAL_SECONDS: workflowWebhookPollIntervalSeconds
  WORKFLOW_POLLS_PER_EXECUTION: workflowPollsPerExecution
  WORKFLOW_MAX_BODY_BYTES: workflowMaxBodyBytes
  WORKFLOW_DELETE_JOB_ON_COMPLETION: workflowDeleteJobOnCompletion
  WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS: workflowRunWatcherIntervalSeconds
  WORKFLOW_HISTORY_RETENTION_DAYS: workflowHistoryRetentionDays
  WORKFLOW_PURGE_SCHEDULE: workflowPurgeSchedule
  WORKFLOW_RESULT_INLINE_BYTES: '65536'
  WORKFLOW_RESULTS_INLINE_TOTAL_BYTES: '262144'
  // Whole task outputs too large to carry inline: the host storage account, whose Blob Data Owner
  // role the app's identity already has (roles.bicep).
  WORKFLOW_RESULTS_CONNECTION: 'AzureWebJobsStorage'
  WORKFLOW_RESULTS_CONTAINER: 'workflow-results'
  // The template's queues live in the host storage account, reached through the connection above.
  WORKFLOW_QUEUE_CONNECTION: 'AzureWebJobsStorage'
  WORKFLOW_REQUEST_QUEUE: workflowRequestQueue
  WORKFLOW_INVALID_EVENT_QUEUE: workflowInvalidEventQueue
  EVENTGRID_BLOB_CREATED_WORKFLOW: empty(eventGridBlobCreatedWorkflow) ? '' : string(eventGridBlobCreatedWorkflow)
  WORKFLOW_COMPLETION_QUEUE: workflowCompletionQueue
  WORKFLOW_COMPLETION_TOPIC_ENDPOINT: workflowCompletionTopicEndpoint
  WORKFLOW_COMPLETION_TOPIC_KEY: completionTopicAuth == 'key' ? secretReferences.completionTopicKey : ''
  WORKFLOW_COMPLETION_EVENT_SOURCE: completionEventSource
  DATABRICKS_WEBHOOK_USERNAME: databricksWebhookUsername
  // Only with a user name: an unresolved reference must not become a usable password.
  DATABRICKS_WEBHOOK_PASSWORD: empty(databricksWebhookUsername) ? '' : secretReferences.webhookPassword
  // ARM evaluates only the chosen branch, so entraApp's outputs are read only when it is deployed.
  WORKFLOW_AUTH_TENANT_ID: entraAppRegistration == 'true' && empty(workflowAuthTenantId) ? tenant().tenantId : workflowAuthTenantId
  WORKFLOW_AUTH_AUDIENCE: entraAppRegistration == 'true' && empty(workflowAuthAudience) ? '${entraApp.outputs.appId},${entraApp.outputs.identifierUri}' : workflowAuthAudience
  WORKFLOW_AUTH_METADATA_URL: workflowAuthMetadataUrl
  WORKFLOW_CALLER_POLICIES: empty(workflowCallerPolicies) ? '' : string(workflowCallerPolicies)
}
// app-settings:end

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    planName: 'plan-${resourceToken}'
    appName: 'func-${resourceToken}'
    location: location
    tags: tags
    serviceName: serviceName
    identityId: identity.outputs.id
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    durableAlwaysReadyInstances: checkedAlwaysReadyInstances
    virtualNetworkSubnetId: privateNetworking ? privateNetwork.outputs.appSubnetId : ''
    appSettings: union(hostSettings, appSettings)
  }
  // The host's first start needs its storage roles, the Key Vault role for the references, the
  // topic role for the first notification, and (private networking) the private endpoints. ARM
  // creates the app only after these; Entra may still take a few minutes to apply new role
  // assignments everywhere, which the first start rides out (docs/deploy.md, "First start").
  dependsOn: [
    roles
    completionTopicSender
    privateNetwork
  ]
}

// ---------------------------------------------------------------------------------------------
// Outputs (azd stores them in the environment: `azd env get-values`). No secret among them.

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}'
output DATABRICKS_NOTIFICATIONS_URL string = 'https://${functionApp.outputs.defaultHostName}/api/databricks/notifications'
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
// The application (client) id to add to the Databricks workspace as a service principal.
output MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output MANAGED_IDENTITY_NAME string = identity.outputs.name
output KEY_VAULT_SECRET_DATABRICKS_PAT string = secretNames.databricksPat
output KEY_VAULT_SECRET_WEBHOOK_PASSWORD string = secretNames.webhookPassword
output KEY_VAULT_SECRET_COMPLETION_TOPIC_KEY string = secretNames.completionTopicKey
// The audience a Logic App's HTTP action names for its managed identity, and the app roles to assign.
output WORKFLOW_API_AUDIENCE string = entraAppRegistration == 'true' ? entraApp.outputs.identifierUri : workflowAuthAudience
output WORKFLOW_API_APP_ROLES array = entraAppRegistration == 'true' ? entraApp.outputs.appRoleValues : []
