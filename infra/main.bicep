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
@description('Region of every resource; it must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
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
// Hosting (strings, as azd environment values are; converted below)

@description('Most instances the app scales out to (40 to 1000).')
param maximumInstanceCount string = '100'

@allowed(['512', '2048', '4096'])
param instanceMemoryMB string = '2048'

@description('Always-ready instances for orchestrators and activities (Microsoft recommends 1 for Durable Functions on Flex Consumption; 0 scales to zero and bills nothing while idle).')
param durableAlwaysReadyInstances string = '1'

@minLength(3)
@maxLength(45)
@description('Durable task hub name (TASKHUB_NAME): letters and digits, starting with a letter.')
param taskHubName string = 'DatabricksJobs'

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
// Completion topic access (optional)

@description('Resource id of the Event Grid topic of WORKFLOW_COMPLETION_TOPIC_ENDPOINT: the app\'s identity gets EventGrid Data Sender on it. Empty: no role.')
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
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
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
    topicName: last(completionTopicIdParts)
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
  // Identity-based host storage; also the Durable task hub (host.json connectionStringName) and the
  // queue trigger's connection.
  AzureWebJobsStorage__accountName: storage.outputs.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.outputs.clientId
  TASKHUB_NAME: taskHubName
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.outputs.clientId};Authorization=AAD'
  // The Python worker links the app's OpenTelemetry spans under each invocation's trace.
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
  WORKFLOW_DEFAULT_TIMEOUT_SECONDS: workflowDefaultTimeoutSeconds
  WORKFLOW_POLL_INTERVAL_SECONDS: workflowPollIntervalSeconds
  WORKFLOW_WEBHOOK_POLL_INTERVAL_SECONDS: workflowWebhookPollIntervalSeconds
  WORKFLOW_POLLS_PER_EXECUTION: workflowPollsPerExecution
  WORKFLOW_MAX_BODY_BYTES: workflowMaxBodyBytes
  WORKFLOW_DELETE_JOB_ON_COMPLETION: workflowDeleteJobOnCompletion
  WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS: workflowRunWatcherIntervalSeconds
  WORKFLOW_HISTORY_RETENTION_DAYS: workflowHistoryRetentionDays
  WORKFLOW_PURGE_SCHEDULE: workflowPurgeSchedule
  // The template's queues live in the host storage account, reached through the connection above.
  WORKFLOW_QUEUE_CONNECTION: 'AzureWebJobsStorage'
  WORKFLOW_REQUEST_QUEUE: workflowRequestQueue
  WORKFLOW_INVALID_EVENT_QUEUE: workflowInvalidEventQueue
  EVENTGRID_BLOB_CREATED_WORKFLOW: empty(eventGridBlobCreatedWorkflow) ? '' : string(eventGridBlobCreatedWorkflow)
  WORKFLOW_COMPLETION_QUEUE: workflowCompletionQueue
  WORKFLOW_COMPLETION_TOPIC_ENDPOINT: workflowCompletionTopicEndpoint
  WORKFLOW_COMPLETION_TOPIC_KEY: completionTopicAuth == 'key' ? secretReferences.completionTopicKey : ''
  WORKFLOW_COMPLETION_EVENT_SOURCE: workflowCompletionEventSource
  DATABRICKS_WEBHOOK_USERNAME: databricksWebhookUsername
  // Only with a user name: an unresolved reference must not become a usable password.
  DATABRICKS_WEBHOOK_PASSWORD: empty(databricksWebhookUsername) ? '' : secretReferences.webhookPassword
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
    maximumInstanceCount: int(maximumInstanceCount)
    instanceMemoryMB: int(instanceMemoryMB)
    durableAlwaysReadyInstances: int(durableAlwaysReadyInstances)
    appSettings: union(hostSettings, appSettings)
  }
  // The host's first start needs its storage roles and the Key Vault role for the references.
  dependsOn: [
    roles
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
