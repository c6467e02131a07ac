// The resources of one Engagement Export deployment, in its resource group (see main.bicep).
targetScope = 'resourceGroup'

param location string
param tags object
@description('Makes every globally unique name unique to this subscription, environment and region.')
param suffix string
@secure()
param sasEncryptionKey string
param destinationStorageAccountName string
param destinationResourceGroupName string
param scheduleContainer string
param forwardRoutes string
param forwardDefaultQueue string
param schedules string
param extraAppSettings object
@description('The application (client) id of the API\'s Entra ID app registration (infra/hooks/preprovision.sh).')
param apiAppId string
param exportKeys string
param maximumInstanceCount int
param instanceMemoryMB int

// Built-in role definitions: the least the app needs on its own storage and its vault.
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // blobs: raw store, job plans, host leases, the deployment package
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // queues: export-poll, export-work and their poison queues
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // tables: apps, jobs, parts, snapshots, idempotency
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6' // reads the secrets its Key Vault references name
}
var deploymentContainerName = 'app-package'
// The tenant's issuer of version 2 access tokens (the registration asks for them), as tokens name it; and the
// audiences a token of the API carries: its application id (v2 tokens), or its app ID URI (v1 tokens).
var authIssuer = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
var authAudience = '${apiAppId},api://${apiAppId}'
var functionAppName = 'func-engagement-export-${suffix}'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stexport${suffix}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    // The app and the host reach their storage with the managed identity only.
    allowSharedKeyAccess: false
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
}

resource destination 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: destinationStorageAccountName
  scope: resourceGroup(destinationResourceGroupName)
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-engagement-export-${suffix}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-engagement-export-${suffix}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-export-${take(suffix, 12)}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
  }
}

resource sasKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'export-sas-encryption-key'
  properties: {
    value: sasEncryptionKey
    contentType: 'Fernet key'
  }
}

// Scheduled exports sign their destination SAS with the account key, so DestinationStorage is a connection
// string; it never leaves the vault.
resource destinationSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'destination-storage-connection'
  properties: {
    value: 'DefaultEndpointsProtocol=https;AccountName=${destination.name};AccountKey=${destination.listKeys().keys[0].value};EndpointSuffix=${environment().suffixes.storage}'
    contentType: 'Azure Storage connection string'
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-engagement-export-${suffix}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: 'SystemAssigned'
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// The settings of the README's configuration table; Flex Consumption sets the runtime and its version itself.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: union(extraAppSettings, {
    AzureWebJobsStorage__accountName: storage.name
    AzureWebJobsStorage__credential: 'managedidentity'
    APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
    EXPORT_SAS_ENCRYPTION_KEY: '@Microsoft.KeyVault(SecretUri=${sasKeySecret.properties.secretUri})'
    DestinationStorage: '@Microsoft.KeyVault(SecretUri=${destinationSecret.properties.secretUri})'
    EXPORT_SCHEDULE_CONTAINER: scheduleContainer
    EXPORT_FORWARD_ROUTES: forwardRoutes
    EXPORT_FORWARD_DEFAULT_QUEUE: forwardDefaultQueue
    EXPORT_SCHEDULES: schedules
    EXPORT_ALLOW_LOOPBACK_DESTINATIONS: 'false'
    AUTH_ISSUER: authIssuer
    AUTH_AUDIENCE: authAudience
    AUTH_ALLOW_LOOPBACK_ISSUER: 'false'
    AUTH_EXPORT_KEYS: exportKeys
  })
  dependsOn: [
    storageRoles
    vaultRole
  ]
}

resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in [
  roles.storageBlobDataOwner
  roles.storageQueueDataContributor
  roles.storageTableDataContributor
]: {
  name: guid(storage.id, functionApp.id, role)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionApp.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output functionAppName string = functionApp.name
output functionAppUrl string = 'https://${functionApp.properties.defaultHostName}'
output storageAccountName string = storage.name
output authIssuer string = authIssuer
