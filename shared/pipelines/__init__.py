"""Pipelines: continuous exports owned by an app (`.../devices/exportPipelines/{name}`), each run an export task.

- ``periods``: the event-time periods of a cadence, their labels and when each is due;
- ``model``: a pipeline as it is stored (its definition and its progress) and as the API shows it;
- ``request``: the checked body of a PUT;
- ``store``: pipelines, their runs and what each run read of the raw store, in the app's storage;
- ``planner``: what a run reads (first runs pin the period's blobs; late runs read only the bytes appended since);
- ``decide``: what a pipeline does next, a pure decision;
- ``driver``: the timer's step for every pipeline, and the alerts each change of state sends;
- ``service``: what the API does with an app's pipelines.
"""
