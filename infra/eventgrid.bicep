// Subscribes OnBlobCreated to the destination storage's BlobCreated events: the Event Grid source that blob
// triggers need on Flex Consumption. Deployed into the destination's resource group after the app's code is
// published (infra/hooks/postdeploy.sh), because the webhook's key, blobs_extension, exists only once the host
// has started with a blob trigger whose source is EventGrid.
targetScope = 'resourceGroup'

@description('The existing destination storage account (DestinationStorage).')
param destinationStorageAccountName string

@description('The container OnBlobCreated watches (EXPORT_SCHEDULE_CONTAINER).')
param scheduleContainer string

@description('The function app, and its resource group.')
param functionAppName string
param functionAppResourceGroupName string

@description('The Event Grid system topic of the destination account; an account has at most one, so name an existing one to reuse it.')
param systemTopicName string = '${destinationStorageAccountName}-events'

// The function that the subscription feeds, as the host's blobs extension names it in its webhook.
var functionName = 'OnBlobCreated'

resource destination 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: destinationStorageAccountName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
  scope: resourceGroup(functionAppResourceGroupName)
}

resource topic 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' = {
  name: systemTopicName
  location: destination.location // a system topic lives in its source's region
  properties: {
    source: destination.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource manifestEvents 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2024-06-01-preview' = {
  parent: topic
  name: 'engagement-export-manifests'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${functionApp.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${listKeys('${functionApp.id}/host/default', '2024-04-01').systemKeys.blobs_extension}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    // Only manifests of the watched container: the trigger's path is {container}/{exportType}/{jobId}/manifest.json.
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${scheduleContainer}/blobs/'
      subjectEndsWith: '/manifest.json'
      isSubjectCaseSensitive: true
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output subscriptionName string = manifestEvents.name
