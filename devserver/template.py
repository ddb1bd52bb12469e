"""What the local stack serves, read from template.yaml: the functions, their API routes and
which of them S3 notifies. Nothing here is hard-coded; a route added to the template is served."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

DEFAULT_HANDLER = "app.lambda_handler"
DEFAULT_TIMEOUT = 3  # seconds, Lambda's default
DEFAULT_MEMORY = 128  # MB, Lambda's default
DEFAULT_ASYNC_RETRIES = 2  # Lambda retries a failed asynchronous invocation (e.g. from S3) twice
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that reads any CloudFormation short-form tag (!Ref, !Sub, !GetAtt …)."""


def _cfn_tag(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    # `!Ref X` -> {"Ref": "X"}, `!GetAtt A.Arn` -> {"Fn::GetAtt": "A.Arn"}: the long forms.
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)  # the long form is a list: [resource, attribute]
    name = tag_suffix if tag_suffix in ("Ref", "Condition") else f"Fn::{tag_suffix}"
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def read_template(path: Path) -> dict[str, Any]:
    """A CloudFormation/SAM template as plain data, short-form tags turned into their long forms."""
    return yaml.load(path.read_text(), Loader=_CfnLoader) or {}  # a SafeLoader subclass


@dataclass(frozen=True)
class Function:
    """One AWS::Serverless::Function whose code is a local Python module."""

    name: str  # logical id
    module_path: Path
    handler_name: str
    timeout: int = DEFAULT_TIMEOUT
    memory: int = DEFAULT_MEMORY
    async_retries: int = DEFAULT_ASYNC_RETRIES


@dataclass(frozen=True)
class Route:
    """An API event: method (upper case, or ANY) + path template such as /syncs/{id}."""

    method: str
    path: str
    function: Function


@dataclass(frozen=True)
class S3Notification:
    """A function S3 invokes for created objects whose key passes every rule (prefix/suffix)."""

    function: Function
    event_types: tuple[str, ...] = ("s3:ObjectCreated:*",)
    rules: tuple[tuple[str, str], ...] = ()

    def wants(self, event_name: str, key: str) -> bool:
        if not any(fnmatch.fnmatchcase(f"s3:{event_name}", pattern) for pattern in self.event_types):
            return False
        for name, value in self.rules:
            if name == "prefix" and not key.startswith(value):
                return False
            if name == "suffix" and not key.endswith(value):
                return False
        return True


@dataclass
class Template:
    functions: dict[str, Function] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    notifications: list[S3Notification] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def load_template(path: Path) -> Template:
    """Functions, API routes and S3 notifications declared in a SAM template."""
    document = read_template(path)
    root = path.resolve().parent
    defaults = (document.get("Globals") or {}).get("Function") or {}
    resources = document.get("Resources") or {}
    template = Template()
    for name, resource in resources.items():
        if not isinstance(resource, dict) or resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = resource.get("Properties") or {}
        function = _function(name, properties, defaults, root)
        if function is None:
            template.warnings.append(f"{name}: no local Python code (CodeUri/Handler); not served")
            continue
        template.functions[name] = function
        for event_name, event in (properties.get("Events") or {}).items():
            _add_event(template, function, event_name, event or {})
    _add_bucket_notifications(template, resources)
    return template


def _function(name: str, properties: dict, defaults: dict, root: Path) -> Function | None:
    code_uri = properties.get("CodeUri", defaults.get("CodeUri"))
    handler = properties.get("Handler", defaults.get("Handler", DEFAULT_HANDLER))
    if not isinstance(code_uri, str) or not isinstance(handler, str) or "." not in handler:
        return None
    module, _, handler_name = handler.rpartition(".")
    module_path = root / code_uri / (module.replace(".", "/") + ".py")
    if not module_path.is_file():
        return None
    return Function(
        name=name,
        module_path=module_path,
        handler_name=handler_name,
        timeout=_int(properties.get("Timeout", defaults.get("Timeout")), DEFAULT_TIMEOUT),
        memory=_int(properties.get("MemorySize", defaults.get("MemorySize")), DEFAULT_MEMORY),
        async_retries=_int(
            (properties.get("EventInvokeConfig") or {}).get("MaximumRetryAttempts"), DEFAULT_ASYNC_RETRIES
        ),
    )


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) else default


def _add_event(template: Template, function: Function, event_name: str, event: dict) -> None:
    kind = event.get("Type")
    properties = event.get("Properties") or {}
    if kind == "Api":
        path, method = properties.get("Path"), properties.get("Method")
        if isinstance(path, str) and isinstance(method, str):
            template.routes.append(Route(method.upper(), path, function))
        else:
            template.warnings.append(f"{function.name}.{event_name}: Api event without a literal Path/Method")
    elif kind == "S3":
        template.notifications.append(_notification(function, properties))
    elif kind == "HttpApi":
        template.warnings.append(f"{function.name}.{event_name}: HttpApi (payload v2) events are not served locally")


def _add_bucket_notifications(template: Template, resources: dict) -> None:
    # Plain CloudFormation: AWS::S3::Bucket NotificationConfiguration.LambdaConfigurations
    # naming the function with !GetAtt Fn.Arn (or !Ref Fn).
    for resource in resources.values():
        if not isinstance(resource, dict) or resource.get("Type") != "AWS::S3::Bucket":
            continue
        configuration = (resource.get("Properties") or {}).get("NotificationConfiguration") or {}
        for entry in configuration.get("LambdaConfigurations") or []:
            function = template.functions.get(_referenced_name(entry.get("Function")))
            if function is not None:
                template.notifications.append(_notification(function, entry, events_key="Event"))


def _referenced_name(reference: Any) -> str:
    if isinstance(reference, dict):
        target = reference.get("Ref") or reference.get("Fn::GetAtt")
        if isinstance(target, list) and target:
            return str(target[0])
        if isinstance(target, str):
            return target.split(".", 1)[0]
    return ""


def _notification(function: Function, properties: dict, events_key: str = "Events") -> S3Notification:
    events = properties.get(events_key) or "s3:ObjectCreated:*"
    events = [events] if isinstance(events, str) else [e for e in events if isinstance(e, str)]
    rules = (((properties.get("Filter") or {}).get("S3Key")) or {}).get("Rules") or []
    # A rule whose value is not a literal (e.g. !Sub) cannot be evaluated here: it lets every key through.
    literal = tuple(
        (str(rule.get("Name", "")).lower(), rule["Value"])
        for rule in rules
        if isinstance(rule, dict) and isinstance(rule.get("Value"), str)
    )
    return S3Notification(function, tuple(events), literal)


def match_route(routes: list[Route], method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
    """The route serving `method path` (path still URL-encoded), its decoded path parameters,
    and the methods the path allows.

    Like API Gateway, the most specific resource wins: literal segments beat {param},
    which beats a greedy {proxy+}.
    """
    best: tuple[tuple[int, ...], str, dict[str, str]] | None = None
    for template_path in {route.path for route in routes}:
        parameters = _match_path(template_path, path)
        if parameters is not None:
            rank = _specificity(template_path)
            if best is None or rank > best[0]:
                best = (rank, template_path, parameters)
    if best is None:
        return None, {}, []
    _, resource, parameters = best
    candidates = [route for route in routes if route.path == resource]
    allowed = sorted({m for route in candidates for m in (HTTP_METHODS if route.method == "ANY" else (route.method,))})
    exact = [route for route in candidates if route.method == method]
    chosen = exact or [route for route in candidates if route.method == "ANY"]
    return (chosen[0] if chosen else None), parameters, allowed


def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("/") if segment]


def _match_path(template_path: str, path: str) -> dict[str, str] | None:
    pattern, actual = _segments(template_path), _segments(path)
    parameters: dict[str, str] = {}
    for index, part in enumerate(pattern):
        if part.startswith("{") and part.endswith("+}"):
            rest = actual[index:]
            if not rest:
                return None
            parameters[part[1:-2]] = unquote("/".join(rest))
            return parameters
        if index >= len(actual):
            return None
        if part.startswith("{") and part.endswith("}"):
            parameters[part[1:-1]] = unquote(actual[index])
        elif part != actual[index]:
            return None
    return parameters if len(pattern) == len(actual) else None


def _specificity(template_path: str) -> tuple[int, ...]:
    # Per segment: 2 literal, 1 {param}, 0 {greedy+}; compared left to right.
    return tuple(0 if part.endswith("+}") else 1 if part.startswith("{") else 2 for part in _segments(template_path))
