// Log Analytics workspace and a workspace-based Application Insights component.
// Local (instrumentation key) authentication is off on both: the Functions host sends telemetry
// with the app's identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING), which holds Monitoring
// Metrics Publisher on this component (roles.bicep), and the workspace takes only Entra-
// authenticated ingestion and queries (no shared workspace keys).

param logAnalyticsName string
param applicationInsightsName string
param location string
param tags object

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

output applicationInsightsName string = appInsights.name
// Not a secret: with local authentication off, ingestion needs an Entra token as well.
output connectionString string = appInsights.properties.ConnectionString
