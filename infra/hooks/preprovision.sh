#!/bin/sh
# azd's preprovision hook: creates, or brings up to date, the Entra ID app registration of the API, before the
# Bicep runs, so that main.bicep can set AUTH_AUDIENCE from it (and AUTH_ISSUER from the tenant). Idempotent: the
# registration's application id is kept in the azd environment (AUTH_API_APP_ID) and reused on every run.
#
# The registration: app ID URI api://<application id> (the form every tenant accepts), the app roles of
# infra/api-app-roles.json (fixed ids, so an update never removes a role that is assigned), access tokens of
# version 2 (iss https://login.microsoftonline.com/<tenant>/v2.0, aud = the application id), and its service
# principal (the enterprise application on which the tenant's administrator assigns the roles).
# Needs the Azure CLI logged in as someone who may create app registrations in the tenant.
set -eu
: "${AZURE_ENV_NAME:?run through azd (azd up or azd provision)}"
roles="$(dirname "$0")/../api-app-roles.json"

app_id="${AUTH_API_APP_ID:-}"
if [ -n "$app_id" ] && ! az ad app show --id "$app_id" --query appId -o tsv >/dev/null 2>&1; then
  echo "AUTH_API_APP_ID $app_id names no app registration in this tenant; unset it to create one" >&2
  exit 1
fi
if [ -z "$app_id" ]; then
  app_id=$(az ad app create --display-name "Engagement Export API ($AZURE_ENV_NAME)" \
    --sign-in-audience AzureADMyOrg --query appId -o tsv)
fi
az ad app update --id "$app_id" --identifier-uris "api://$app_id" --app-roles "@$roles"
object_id=$(az ad app show --id "$app_id" --query id -o tsv)
az rest --method PATCH --uri "https://graph.microsoft.com/v1.0/applications/$object_id" \
  --headers "Content-Type=application/json" --body '{"api": {"requestedAccessTokenVersion": 2}}'
az ad sp show --id "$app_id" >/dev/null 2>&1 || az ad sp create --id "$app_id" >/dev/null
azd env set AUTH_API_APP_ID "$app_id"
echo "Entra ID app registration of the API: $app_id (api://$app_id); assign its app roles on its enterprise application"
