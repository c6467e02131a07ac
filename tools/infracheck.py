"""`make infra-check`: checks infra/ and azure.yaml as far as this machine can, without Azure and without the
Bicep CLI (no package registry ships it: it downloads its binary from GitHub, which this machine cannot reach).

1. Syntax: every `infra/*.bicep` file is parsed with the tree-sitter Bicep grammar (PyPI: tree-sitter-bicep);
   any error or missing token is reported with its line and column.
2. What `bicep build` would refuse first: a symbol used but never declared, or declared twice; an unknown
   function; a resource type without its `@api-version`; a module whose file is missing, that is given a
   parameter it does not declare, or not given one it requires; main.parameters.json naming a parameter
   main.bicep lacks, or leaving out one it requires.
3. What the app needs (docs/operations.md, "Deploying to Azure"): a Flex Consumption plan and a Linux function
   app running Python 3.11 with a system-assigned identity; exactly the Blob Data Owner, Queue Data Contributor
   and Table Data Contributor roles on its own storage (no shared keys) and Secrets User on its Key Vault; app settings
   that config.py names, the required ones present, the Fernet key and DestinationStorage as Key Vault
   references; Application Insights; the Event Grid subscription to OnBlobCreated's webhook, filtered to the
   manifests of the watched container as OnBlobCreated/function.json's path says; azure.yaml's service and hook.
4. Entra ID (docs/operations.md, "Entra ID"): AUTH_ISSUER is the tenant's v2.0 issuer, AUTH_AUDIENCE the API's
   application id that the preprovision hook keeps (AUTH_API_APP_ID, through main.parameters.json), no loopback
   issuer; infra/api-app-roles.json declares exactly the app roles the code checks (shared/platform/grants.py),
   with distinct ids, assignable to applications (service principals, managed identities); azure.yaml runs the
   preprovision hook, which applies those roles and asks for version 2 tokens.

What cannot be checked here: ARM's own validation (the resource providers' schemas, API versions a region
offers, quota), and a real deployment. Exit status 1 when a problem is found, each printed on its own line.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import tree_sitter_bicep
import yaml
from tree_sitter import Language, Node, Parser

from devhost.listeners import path_suffix

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Bicep's functions (sys namespace) and the az namespace's: a call to any other name is an error.
FUNCTIONS = frozenset("""
any array base64 base64ToJson base64ToString bool coalesce concat contains dataUri dataUriToString dateTimeAdd
dateTimeFromEpoch dateTimeToEpoch deployer deployment empty endsWith environment extensionResourceId filter first
flatten format getSecret groupBy guid indexOf int intersection items join json last lastIndexOf length list
listAccountSas listKeys listSecrets loadFileAsBase64 loadJsonContent loadTextContent loadYamlContent
managementGroup managementGroupResourceId map mapValues max min newGuid objectKeys padLeft parseCidr pickZones
providers range readEnvironmentVariable reduce reference replace resourceGroup resourceId shallowMerge skip sort
split startsWith string subscription subscriptionResourceId substring take tenant tenantResourceId toLower
toObject toUpper trim tryGet union uniqueString uri uriComponent uriComponentToString utcNow
""".split())
NAMESPACES = frozenset({"az", "sys"})
RESOURCE_TYPE = re.compile(r"^[A-Za-z]+\.[A-Za-z]+(/[A-Za-z]+)+@\d{4}-\d{2}-\d{2}(-preview)?$")
ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
}
STORAGE_ROLES = {"Storage Blob Data Owner", "Storage Queue Data Contributor", "Storage Table Data Contributor"}
# Settings the Functions host reads itself, beside the app's own (shared/platform/config.py).
HOST_SETTINGS = {"AzureWebJobsStorage__credential"}
# Read from a Key Vault reference, never written into the app's configuration.
SECRET_SETTINGS = ("EXPORT_SAS_ENCRYPTION_KEY", "DestinationStorage")
REQUIRED_SETTINGS = ("AzureWebJobsStorage__accountName", "APPLICATIONINSIGHTS_CONNECTION_STRING",
                     "EXPORT_SCHEDULE_CONTAINER", "AUTH_ISSUER", "AUTH_AUDIENCE") + SECRET_SETTINGS
APP_ROLES_FILE = "api-app-roles.json"
PREPROVISION_HOOK = "infra/hooks/preprovision.sh"
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")

_parser = Parser(Language(tree_sitter_bicep.language()))


@dataclass(frozen=True)
class Expr:
    """An expression kept as its source text (a reference, a call, an interpolated string)."""

    text: str


@dataclass
class Declaration:
    kind: str  # param, var, resource, module, output
    name: str
    node: Node
    type: str = ""  # a resource's type string, a module's path
    value: Any = None  # the declared body as Python values (Expr for what is computed at deployment)
    has_default: bool = False
    existing: bool = False


@dataclass
class BicepFile:
    path: str
    target_scope: str = "resourceGroup"
    declarations: list[Declaration] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Declaration]:
        return [d for d in self.declarations if d.kind == kind]

    def resources(self, type_prefix: str) -> list[Declaration]:
        return [d for d in self.of_kind("resource") if d.type.lower().startswith(type_prefix.lower() + "@")]


def _text(node: Node) -> str:
    return node.text.decode("utf-8") if node.text is not None else ""


def _where(path: str, node: Node) -> str:
    return f"{os.path.relpath(path, REPO_ROOT)}:{node.start_point[0] + 1}:{node.start_point[1] + 1}"


def value_of(node: Node | None) -> Any:
    """The node as Python data: objects, arrays, literals; `union(...)` of objects merged; the rest as Expr."""
    if node is None:
        return None
    kind = node.type
    if kind == "object":
        result = {}
        for item in node.named_children:
            if item.type != "object_property" or not item.named_children:
                continue
            key_node = item.named_children[0]
            if key_node.type == "resource_declaration":
                continue
            key = _string_literal(key_node) if key_node.type == "string" else _text(key_node)
            result[key] = value_of(item.named_children[1] if len(item.named_children) > 1 else None)
        return result
    if kind == "array":
        return [value_of(child) for child in node.named_children if child.type != "comment"]
    if kind == "string":
        literal = _string_literal(node)
        return literal if literal is not None else Expr(_text(node))
    if kind == "number":
        return int(_text(node))
    if kind == "boolean":
        return _text(node) == "true"
    if kind == "null":
        return None
    if kind == "call_expression" and _text(node.named_children[0]) == "union":
        merged: dict[str, Any] = {}
        for argument in node.named_children[1].named_children:
            value = value_of(argument)
            if isinstance(value, dict):
                merged.update(value)
        return merged
    return Expr(_text(node))


def _string_literal(node: Node) -> str | None:
    """A string without interpolation, unescaped; None for an interpolated one."""
    parts = []
    for child in node.named_children:
        if child.type == "string_content":
            parts.append(_text(child))
        elif child.type == "escape_sequence":
            parts.append({"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\t": "\t",
                          "\\$": "$"}.get(_text(child), _text(child)))
        else:
            return None
    return "".join(parts)


def _errors(path: str, node: Node) -> Iterator[str]:
    if node.type == "ERROR":
        yield f"{_where(path, node)}: syntax error near {_text(node)[:40]!r}"
        return
    if node.is_missing:
        yield f"{_where(path, node)}: missing {node.type!r}"
        return
    for child in node.children:
        yield from _errors(path, child)


def parse_bicep(path: str) -> BicepFile:
    with open(path, "rb") as handle:
        tree = _parser.parse(handle.read())
    parsed = BicepFile(path)
    parsed.problems += list(_errors(path, tree.root_node))
    if parsed.problems:
        return parsed  # what follows a syntax error is not worth reading
    kinds = {"parameter_declaration": "param", "variable_declaration": "var", "resource_declaration": "resource",
             "module_declaration": "module", "output_declaration": "output"}
    for node in tree.root_node.named_children:
        if node.type == "target_scope_assignment":
            parsed.target_scope = _string_literal(node.named_children[0]) or ""
        if node.type not in kinds:
            continue
        children = [child for child in node.named_children if child.type != "comment"]
        declaration = Declaration(kinds[node.type], _text(children[0]), node)
        if declaration.kind in ("resource", "module"):
            declaration.type = _string_literal(children[1]) or ""
            declaration.existing = any(child.type == "existing" for child in node.children)
            body = children[-1]
            if body.type == "for_statement":
                body = [child for child in body.named_children if child.type == "object"][-1]
            elif body.type == "if_statement":
                body = body.named_children[-1]
            declaration.value = value_of(body)
        elif declaration.kind == "param":
            declaration.has_default = len(children) > 2
            declaration.value = value_of(children[2]) if declaration.has_default else None
        else:
            declaration.value = value_of(children[-1])
        parsed.declarations.append(declaration)
    parsed.problems += _symbol_problems(parsed, tree.root_node)
    return parsed


def _symbol_problems(parsed: BicepFile, root: Node) -> list[str]:
    problems = []
    declared: set[str] = set()
    for declaration in parsed.declarations:
        if declaration.kind == "output":
            continue
        if declaration.name in declared:
            problems.append(f"{_where(parsed.path, declaration.node)}: {declaration.name!r} is declared twice")
        declared.add(declaration.name)
        if (declaration.kind == "resource" and not RESOURCE_TYPE.match(declaration.type)):
            problems.append(f"{_where(parsed.path, declaration.node)}: resource type {declaration.type!r} is not "
                            f"Namespace/type@api-version")

    def visit(node: Node, scope: set[str]) -> None:
        kind = node.type
        if kind in ("type", "comment", "decorators", "property_identifier"):
            return
        children = node.named_children
        if kind in ("parameter_declaration", "variable_declaration", "resource_declaration", "module_declaration",
                    "output_declaration"):
            children = children[1:]  # the declared name
        elif kind == "object_property" and children and children[0].type == "identifier":
            children = children[1:]  # the key
        elif kind == "call_expression":
            name = _text(children[0])
            if children[0].type == "identifier" and name not in FUNCTIONS and name not in declared:
                problems.append(f"{_where(parsed.path, node)}: unknown function {name!r}")
            children = children[1:]
        elif kind == "member_expression" and children and _text(children[0]) in NAMESPACES:
            return
        elif kind == "for_statement":
            variables = [child for child in children if child.type in ("identifier", "for_variable_block")]
            names = set()
            for variable in variables[:1]:
                names |= {_text(n) for n in ([variable] if variable.type == "identifier" else variable.named_children)}
            for child in children[1:]:
                visit(child, scope | names)
            return
        elif kind == "lambda_expression":
            names = {_text(child) for child in children[:-1] if child.type == "identifier"}
            for group in (child for child in children[:-1] if child.type != "identifier"):
                names |= {_text(n) for n in group.named_children if n.type == "identifier"}
            visit(children[-1], scope | names)
            return
        elif kind == "identifier":
            if _text(node) not in scope:
                problems.append(f"{_where(parsed.path, node)}: {_text(node)!r} is not declared")
            return
        for child in children:
            visit(child, scope)

    visit(root, declared)
    return problems


def _config_setting_names() -> set[str]:
    from shared.platform import config

    return {value for name, value in vars(config).items() if name.isupper() and isinstance(value, str)
            and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value)}


def _trigger_of(function: str) -> dict:
    with open(os.path.join(REPO_ROOT, function, "function.json"), encoding="utf-8") as handle:
        return json.load(handle)["bindings"][0]


def _module_problems(parsed: BicepFile) -> Iterator[str]:
    for module in parsed.of_kind("module"):
        target = os.path.join(os.path.dirname(parsed.path), module.type)
        if not os.path.exists(target):
            yield f"{_where(parsed.path, module.node)}: module file {module.type!r} does not exist"
            continue
        params = {d.name: d for d in parse_bicep(target).of_kind("param")}
        given = set((module.value or {}).get("params") or {})
        for name in sorted(given - set(params)):
            yield f"{_where(parsed.path, module.node)}: {module.type} declares no parameter {name!r}"
        for name in sorted(set(p for p, d in params.items() if not d.has_default) - given):
            yield f"{_where(parsed.path, module.node)}: {module.type} requires parameter {name!r}"


def _parameters_file_problems(main: BicepFile, path: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        mapped = set(json.load(handle)["parameters"])
    params = {d.name: d for d in main.of_kind("param")}
    for name in sorted(mapped - set(params)):
        yield f"{os.path.relpath(path, REPO_ROOT)}: main.bicep has no parameter {name!r}"
    for name in sorted(set(p for p, d in params.items() if not d.has_default) - mapped):
        yield f"{os.path.relpath(path, REPO_ROOT)}: main.bicep's required parameter {name!r} is not given"


def _app_problems(main: BicepFile, app: BicepFile) -> Iterator[str]:
    if main.target_scope != "subscription" or not main.resources("Microsoft.Resources/resourceGroups"):
        yield "main.bicep: must deploy at subscription scope and create the app's resource group (azd up)"
    plans = app.resources("Microsoft.Web/serverfarms")
    if not any((p.value.get("sku") or {}).get("tier") == "FlexConsumption" and p.value["sku"].get("name") == "FC1"
               for p in plans):
        yield "app.bicep: no Flex Consumption plan (sku FC1, tier FlexConsumption)"
    sites = app.resources("Microsoft.Web/sites")
    if len(sites) != 1:
        yield f"app.bicep: expected one function app, found {len(sites)}"
        return
    site = sites[0].value
    if site.get("kind") != "functionapp,linux":
        yield "app.bicep: the function app's kind must be functionapp,linux"
    if (site.get("identity") or {}).get("type") != "SystemAssigned":
        yield "app.bicep: the function app needs a system-assigned identity"
    config = (site.get("properties") or {}).get("functionAppConfig") or {}
    if config.get("runtime") != {"name": "python", "version": "3.11"}:
        yield "app.bicep: functionAppConfig.runtime must be python 3.11"
    storage = ((config.get("deployment") or {}).get("storage") or {})
    if (storage.get("authentication") or {}).get("type") != "SystemAssignedIdentity":
        yield "app.bicep: the deployment package must be read with the system-assigned identity"
    if not app.resources("Microsoft.Insights/components"):
        yield "app.bicep: no Application Insights component"
    yield from _settings_problems(app)
    yield from _role_problems(app)
    for account in app.resources("Microsoft.Storage/storageAccounts"):
        if not account.existing and (account.value.get("properties") or {}).get("allowSharedKeyAccess") is not False:
            yield f"app.bicep: storage account {account.name} must set allowSharedKeyAccess: false (identity only)"
    for vault in app.resources("Microsoft.KeyVault/vaults"):
        if (vault.value.get("properties") or {}).get("enableRbacAuthorization") is not True:
            yield f"app.bicep: Key Vault {vault.name} must use RBAC authorization"


def _settings_problems(app: BicepFile) -> Iterator[str]:
    configs = [d for d in app.resources("Microsoft.Web/sites/config") if d.value.get("name") == "appsettings"]
    if len(configs) != 1:
        yield "app.bicep: expected one Microsoft.Web/sites/config named appsettings"
        return
    settings = configs[0].value.get("properties")
    if not isinstance(settings, dict):
        yield "app.bicep: the app settings must be an object (or a union with one)"
        return
    known = _config_setting_names() | HOST_SETTINGS
    for name in sorted(set(settings) - known):
        yield f"app.bicep: app setting {name!r} is not one the app or the host reads (shared/platform/config.py)"
    for name in REQUIRED_SETTINGS:
        if name not in settings:
            yield f"app.bicep: app setting {name!r} is missing"
    for name in SECRET_SETTINGS:
        value = settings.get(name)
        if not (isinstance(value, Expr) and value.text.startswith("'@Microsoft.KeyVault(SecretUri=")):
            yield f"app.bicep: app setting {name!r} must be a Key Vault reference"


def _role_problems(app: BicepFile) -> Iterator[str]:
    variables = {d.name: d.value for d in app.of_kind("var")}
    granted: dict[str, set[str]] = {}
    for assignment in app.resources("Microsoft.Authorization/roleAssignments"):
        text = _text(assignment.node)
        scope = assignment.value.get("scope")
        guids = set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text))
        for name, value in variables.items():  # roles named through a variable of GUIDs
            if isinstance(value, dict):
                guids |= {v for k, v in value.items() if isinstance(v, str) and re.search(rf"\b{name}\.{k}\b", text)}
        for guid in guids:
            role = ROLES.get(guid)
            if role is None:
                yield f"app.bicep: {assignment.name} grants role {guid}, which the app does not need"
            else:
                granted.setdefault(role, set()).add(scope.text if isinstance(scope, Expr) else str(scope))
    accounts = [d.name for d in app.resources("Microsoft.Storage/storageAccounts") if not d.existing]
    for role in sorted(STORAGE_ROLES):
        if not granted.get(role, set()) & set(accounts):
            yield f"app.bicep: the function app is not granted {role} on its storage account"
    vaults = {d.name for d in app.resources("Microsoft.KeyVault/vaults")}
    if not granted.get("Key Vault Secrets User", set()) & vaults:
        yield "app.bicep: the function app is not granted Key Vault Secrets User on its vault"


def _resolved(app: BicepFile, value: Any) -> str:
    """A setting's value as text, a variable it names replaced by the variable's own text."""
    text = value.text if isinstance(value, Expr) else str(value)
    for declaration in app.of_kind("var"):
        if text == declaration.name:
            return _resolved(app, declaration.value)
    return text


def _entra_problems(root: str, main: BicepFile, app: BicepFile) -> Iterator[str]:
    configs = [d for d in app.resources("Microsoft.Web/sites/config") if d.value.get("name") == "appsettings"]
    settings = (configs[0].value.get("properties") if configs else None) or {}
    if isinstance(settings, dict):
        issuer = _resolved(app, settings.get("AUTH_ISSUER", ""))
        if not (issuer.startswith("'${environment().authentication.loginEndpoint}${tenant().tenantId}")
                and issuer.endswith("/v2.0'")):
            yield "app.bicep: AUTH_ISSUER must be the tenant's v2.0 issuer: '${environment().authentication." \
                  "loginEndpoint}${tenant().tenantId}/v2.0'"
        if "${apiAppId}" not in _resolved(app, settings.get("AUTH_AUDIENCE", "")):
            yield "app.bicep: AUTH_AUDIENCE must name the API's application id (the apiAppId parameter)"
        if settings.get("AUTH_ALLOW_LOOPBACK_ISSUER", "false") != "false":
            yield "app.bicep: AUTH_ALLOW_LOOPBACK_ISSUER must be 'false' in Azure"
    with open(os.path.join(root, "infra", "main.parameters.json"), encoding="utf-8") as handle:
        mapped = json.load(handle)["parameters"]
    if (mapped.get("apiAppId") or {}).get("value") != "${AUTH_API_APP_ID}":
        yield "main.parameters.json: apiAppId must be ${AUTH_API_APP_ID}, which the preprovision hook sets"
    yield from _app_roles_problems(root)


def _app_roles_problems(root: str) -> Iterator[str]:
    from shared.platform import grants

    where = f"infra/{APP_ROLES_FILE}"
    try:
        with open(os.path.join(root, "infra", APP_ROLES_FILE), encoding="utf-8") as handle:
            roles = json.load(handle)
    except (OSError, ValueError) as error:
        yield f"{where}: cannot be read as JSON ({error})"
        return
    values = [role.get("value") for role in roles if isinstance(role, dict)]
    if sorted(map(str, values)) != sorted(grants.ROLES):
        yield f"{where}: the app roles must be exactly {', '.join(grants.ROLES)} (shared/platform/grants.py), " \
              f"not {', '.join(map(str, values))}"
    ids = [role.get("id") for role in roles if isinstance(role, dict)]
    if len(set(ids)) != len(ids) or not all(isinstance(i, str) and _GUID.match(i) for i in ids):
        yield f"{where}: every app role needs its own fixed id (a lower-case GUID)"
    for role in roles:
        if isinstance(role, dict) and "Application" not in (role.get("allowedMemberTypes") or []):
            yield f"{where}: app role {role.get('value')} must be assignable to applications (service principals)"


def _event_grid_problems(eventgrid: BicepFile) -> Iterator[str]:
    trigger = _trigger_of("OnBlobCreated")
    if trigger.get("source") != "EventGrid":
        yield "OnBlobCreated/function.json: the blob trigger's source must be EventGrid (Flex Consumption)"
    subscriptions = eventgrid.resources("Microsoft.EventGrid/systemTopics/eventSubscriptions")
    if len(subscriptions) != 1:
        yield f"eventgrid.bicep: expected one event subscription, found {len(subscriptions)}"
        return
    properties = subscriptions[0].value.get("properties") or {}
    endpoint = ((properties.get("destination") or {}).get("properties") or {}).get("endpointUrl")
    variables = {d.name: d.value for d in eventgrid.of_kind("var")}
    endpoint_text = endpoint.text if isinstance(endpoint, Expr) else str(endpoint)
    for name, value in variables.items():
        if isinstance(value, str):
            endpoint_text = endpoint_text.replace("${" + name + "}", value)
    if "/runtime/webhooks/blobs?functionName=Host.Functions.OnBlobCreated&code=" not in endpoint_text:
        yield "eventgrid.bicep: the webhook must be /runtime/webhooks/blobs?functionName=Host.Functions.OnBlobCreated"
    if "systemKeys.blobs_extension" not in endpoint_text:
        yield "eventgrid.bicep: the webhook's code must be the host's blobs_extension system key"
    event_filter = properties.get("filter") or {}
    if event_filter.get("includedEventTypes") != ["Microsoft.Storage.BlobCreated"]:
        yield "eventgrid.bicep: the subscription must take Microsoft.Storage.BlobCreated only"
    suffix = path_suffix(trigger["path"])
    if event_filter.get("subjectEndsWith") != suffix:
        yield f"eventgrid.bicep: subjectEndsWith must be {suffix!r}, the end of OnBlobCreated's path"
    begins = event_filter.get("subjectBeginsWith")
    if not (isinstance(begins, Expr) and begins.text.startswith("'/blobServices/default/containers/${")
            and begins.text.endswith("/blobs/'")):
        yield "eventgrid.bicep: subjectBeginsWith must be the watched container's /blobServices/default/containers/..."


def _azure_yaml_problems(root: str) -> Iterator[str]:
    with open(os.path.join(root, "azure.yaml"), encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    services = document.get("services") or {}
    if not any(s.get("host") == "function" and s.get("language") == "python" and s.get("project") in (".", "./")
               for s in services.values()):
        yield "azure.yaml: no python service with host: function and project: ."
    hook = ((document.get("hooks") or {}).get("postdeploy") or {}).get("run")
    if not hook or not os.path.exists(os.path.join(root, hook)):
        yield "azure.yaml: the postdeploy hook that subscribes OnBlobCreated is missing"
    hook = ((document.get("hooks") or {}).get("preprovision") or {}).get("run")
    if hook != PREPROVISION_HOOK or not os.path.exists(os.path.join(root, hook)):
        yield f"azure.yaml: the preprovision hook that makes the API's app registration ({PREPROVISION_HOOK}) " \
              f"is missing"
        return
    with open(os.path.join(root, hook), encoding="utf-8") as handle:
        script = handle.read()
    for needed, why in ((APP_ROLES_FILE, "apply the app roles"),
                        ('"requestedAccessTokenVersion": 2', "ask for version 2 tokens (the v2.0 issuer)"),
                        ("azd env set AUTH_API_APP_ID", "keep the application id for main.parameters.json")):
        if needed not in script:
            yield f"{PREPROVISION_HOOK}: must {why} ({needed})"


def check(root: str = REPO_ROOT) -> list[str]:
    infra = os.path.join(root, "infra")
    files = {name[:-len(".bicep")]: parse_bicep(os.path.join(infra, name))
             for name in sorted(os.listdir(infra)) if name.endswith(".bicep")}
    problems = [problem for parsed in files.values() for problem in parsed.problems]
    for parsed in files.values():
        problems += list(_module_problems(parsed))
    missing = sorted({"main", "app", "eventgrid"} - set(files))
    if missing:
        return problems + [f"infra/{name}.bicep is missing" for name in missing]
    problems += list(_parameters_file_problems(files["main"], os.path.join(infra, "main.parameters.json")))
    problems += list(_app_problems(files["main"], files["app"]))
    problems += list(_entra_problems(root, files["main"], files["app"]))
    problems += list(_event_grid_problems(files["eventgrid"]))
    problems += list(_azure_yaml_problems(root))
    return problems


def main() -> int:
    problems = check()
    for problem in problems:
        print(problem)
    files = sorted(name for name in os.listdir(os.path.join(REPO_ROOT, "infra")) if name.endswith(".bicep"))
    print(f"infra-check: {len(problems)} problem(s) in {', '.join(files)}, main.parameters.json and azure.yaml")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
