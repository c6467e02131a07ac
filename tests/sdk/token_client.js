// The retired service's generated Node SDK (azure-arm-mobileengagement) signed in as Azure clients were: an Entra ID
// access token in ms-rest-azure's TokenCredentials, the base URL pointed at this service. Creates a tags task and
// reads it back with the token of a granted principal, then lists the app collection's apps (Apps_List) with an
// Apps.Admin principal's token. Prints what the SDK deserialized as one JSON document; inputs come from the
// environment.
'use strict';
const msRestAzure = require('ms-rest-azure');
const MobileEngagementClient = require('azure-arm-mobileengagement');

const env = process.env;
const client = (token) => new MobileEngagementClient(new msRestAzure.TokenCredentials(token), 'sub-1', env.BASE_URL);

async function main() {
  const tasks = client(env.TASKS_TOKEN).exportTasks;
  const created = await tasks.createTagsTask(env.RESOURCE_GROUP, env.COLLECTION, env.APP,
    { containerUrl: env.CONTAINER_URL, description: 'with a token', exportFormat: 'JsonBlob' });
  const fetched = await tasks.get(env.RESOURCE_GROUP, env.COLLECTION, env.APP, created.id);
  const apps = await client(env.ADMIN_TOKEN).apps.list(env.RESOURCE_GROUP, env.COLLECTION);
  process.stdout.write(JSON.stringify({ created, fetched, apps: Array.from(apps), nextLink: apps.nextLink || null }));
}

main().catch((error) => {
  process.stderr.write(`${error.statusCode || ''} ${error.message}\n`);
  process.exit(1);
});
