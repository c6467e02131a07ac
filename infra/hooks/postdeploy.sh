#!/bin/sh
# azd's postdeploy hook: subscribes OnBlobCreated to the destination's BlobCreated events (infra/eventgrid.bicep).
# It runs after the code is published because the subscription's webhook key (blobs_extension) exists only
# once the host has started with the app. azd sets the variables below from main.bicep's outputs.
set -eu
: "${AZURE_FUNCTION_APP_NAME:?run through azd (azd up or azd deploy): main.bicep outputs it}"
: "${AZURE_RESOURCE_GROUP:?run through azd}"
: "${DESTINATION_STORAGE_ACCOUNT:?set it with azd env set DESTINATION_STORAGE_ACCOUNT <account>}"
: "${DESTINATION_RESOURCE_GROUP:?run through azd}"
: "${EXPORT_SCHEDULE_CONTAINER:=scheduled-exports}"

# The host creates the key on its first start: wake it, and wait until the key can be read.
hostname=$(az functionapp show -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" --query defaultHostName -o tsv)
attempt=0
until az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
    --query "systemKeys.blobs_extension" -o tsv 2>/dev/null | grep -q .; do
  attempt=$((attempt + 1))
  if [ "$attempt" -gt 30 ]; then
    echo "the blobs_extension key of $AZURE_FUNCTION_APP_NAME did not appear in 5 minutes; is the app running?" >&2
    exit 1
  fi
  curl -sS -o /dev/null "https://$hostname/" || true
  sleep 10
done

az deployment group create \
  --resource-group "$DESTINATION_RESOURCE_GROUP" \
  --name engagement-export-events \
  --template-file "$(dirname "$0")/../eventgrid.bicep" \
  --parameters destinationStorageAccountName="$DESTINATION_STORAGE_ACCOUNT" \
               scheduleContainer="$EXPORT_SCHEDULE_CONTAINER" \
               functionAppName="$AZURE_FUNCTION_APP_NAME" \
               functionAppResourceGroupName="$AZURE_RESOURCE_GROUP" \
  --output none
echo "OnBlobCreated subscribed to $DESTINATION_STORAGE_ACCOUNT/$EXPORT_SCHEDULE_CONTAINER manifests"
