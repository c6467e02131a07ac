// The retired service's generated Node SDK (azure-arm-mobileengagement), pointed at this service by its base
// URL and bearer key only: creates a tags task, pages the task list with listNext, reads each task back.
// Prints what the SDK deserialized as one JSON document. Inputs come from the environment.
'use strict';
const msRest = require('ms-rest');
const MobileEngagementClient = require('azure-arm-mobileengagement');

const env = process.env;
const client = new MobileEngagementClient(new msRest.TokenCredentials(env.EXPORT_KEY), 'sub-1', env.BASE_URL);
const ops = client.exportTasks;

async function main() {
  const created = await ops.createTagsTask(env.RESOURCE_GROUP, env.COLLECTION, env.APP,
    { containerUrl: env.CONTAINER_URL, description: 'from the old SDK', exportFormat: 'CsvBlob' });
  const listed = [];
  let page = await ops.list(env.RESOURCE_GROUP, env.COLLECTION, env.APP, { top: 2, orderby: env.ORDERBY });
  for (;;) {
    listed.push(...page);
    if (!page.nextLink) break;
    page = await ops.listNext(page.nextLink);
  }
  const fetched = [];
  for (const task of listed) {
    fetched.push(await ops.get(env.RESOURCE_GROUP, env.COLLECTION, env.APP, task.id));
  }
  process.stdout.write(JSON.stringify({ created, listed, fetched }));
}

main().catch((error) => {
  process.stderr.write(`${error.statusCode || ''} ${error.message}\n`);
  process.exit(1);
});
