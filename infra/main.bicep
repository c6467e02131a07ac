// Engagement Export in Azure: `azd up` provisions this, then publishes the app, then runs
// infra/hooks/postdeploy.sh, which subscribes the app to the destination's blob events (infra/eventgrid.bicep).
// The subscription comes last because its webhook needs the host's blobs_extension key, which the host creates
// on its first start with the app's code.
targetScope = 'subscription'

@minLength(1)
@maxLength(48)
@description('The azd environment name; names the resource group and seeds every resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource: one where Flex Consumption runs Python 3.11.')
param location string

@secure()
@description('EXPORT_SAS_ENCRYPTION_KEY: the Fernet key (urlsafe base64 of 32 random bytes) that seals each job\'s destination SAS. Kept in Key Vault; the app reads it through a Key Vault reference. Keep it: jobs sealed with a lost key cannot run.')
param sasEncryptionKey string

@description('The existing storage account that scheduled exports go to and OnBlobCreated watches (DestinationStorage).')
param destinationStorageAccountName string

@description('The resource group of that account (this deployment\'s own group when empty).')
param destinationResourceGroupName string = ''

@description('EXPORT_SCHEDULE_CONTAINER: the container of the destination that OnBlobCreated watches.')
param scheduleContainer string = 'scheduled-exports'

@description('EXPORT_FORWARD_ROUTES: JSON, export type -> list of downstream queue names.')
param forwardRoutes string = '{}'

@description('EXPORT_FORWARD_DEFAULT_QUEUE: the queue for types the routes do not name.')
param forwardDefaultQueue string = 'export-files'

@description('EXPORT_SCHEDULES: JSON array of scheduled exports.')
param schedules string = '[]'

@description('The application (client) id of the API\'s Entra ID app registration, which infra/hooks/preprovision.sh creates or updates and keeps in the azd environment (AUTH_API_APP_ID). Tokens are for it: AUTH_AUDIENCE.')
param apiAppId string

@description('AUTH_EXPORT_KEYS: whether an app\'s export key still opens its own app beside Entra ID tokens (\'true\' or \'false\').')
@allowed([
  'true'
  'false'
])
param exportKeys string = 'true'

@description('Any other setting of the README\'s configuration table, by name (for example EXPORT_WORKER_CONCURRENCY).')
param extraAppSettings object = {}

@description('Flex Consumption: the most instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex Consumption: memory of one instance.')
@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

var tags = {
  'azd-env-name': environmentName
}
var suffix = toLower(uniqueString(subscription().id, environmentName, location))

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module app 'app.bicep' = {
  name: 'engagement-export-app'
  scope: group
  params: {
    location: location
    tags: tags
    suffix: suffix
    sasEncryptionKey: sasEncryptionKey
    destinationStorageAccountName: destinationStorageAccountName
    destinationResourceGroupName: empty(destinationResourceGroupName) ? group.name : destinationResourceGroupName
    scheduleContainer: scheduleContainer
    forwardRoutes: forwardRoutes
    forwardDefaultQueue: forwardDefaultQueue
    schedules: schedules
    apiAppId: apiAppId
    exportKeys: exportKeys
    extraAppSettings: extraAppSettings
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = group.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output AZURE_FUNCTION_APP_URL string = app.outputs.functionAppUrl
output AZURE_STORAGE_ACCOUNT_NAME string = app.outputs.storageAccountName
output DESTINATION_STORAGE_ACCOUNT string = destinationStorageAccountName
output DESTINATION_RESOURCE_GROUP string = empty(destinationResourceGroupName) ? group.name : destinationResourceGroupName
output EXPORT_SCHEDULE_CONTAINER string = scheduleContainer
output AUTH_ISSUER string = app.outputs.authIssuer
