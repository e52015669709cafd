"""``captioner doctor``'s checks: can this deployment (in AWS, or the local stack) work?

Each check returns one ``Check``: ok, warn or fail, what it saw, and for a warn or a fail the
fix. They run in the order a deployment depends on them: AWS (credentials, region,
endpoint), the stack and its outputs, each provider (its key readable, the provider
reachable with it through one unpaid call), each bucket the stack serves (readable, sending
its events, readable by the function's role), the queues, today's spend and stuck rows.
A check that raises is a fail with the error's one-line description; a key is never shown.

``served_buckets`` is also the guard of ``backfill``: a bucket the stack does not serve is
refused there, since every message enqueued for it would fail into the dead-letter queue.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Literal

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from captioner.apikey import parse_secret
from captioner.errors import ProviderConfigError
from captioner.store import now_iso
from captioner_tools.cli.queues import queue_depth
from captioner_tools.cli.target import OUTPUT_KEYS, Deployment
from captioner_tools.errors import ToolError
from captioner_tools.notifications import EXISTING_BUCKETS_PARAMETER

Status = Literal["ok", "warn", "fail"]
PROVIDER_TIMEOUT_S = 10.0
DEFAULT_MODELSLAB_URL = "https://modelslab.com/api/v6"
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
# A job id no account has: fetching it costs nothing, and the reply says whether the key is good.
UNPAID_JOB_ID = "0"
STUCK_ROWS_SHOWN = 3
_HEALTHY_STACK = ("CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE")


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def healthy(checks: list[Check]) -> bool:
    """No check failed (warnings say what needs attention, but the deployment works)."""
    return all(c.status != "fail" for c in checks)


def run_checks(
    deployment: Deployment,
    env: Mapping[str, str] | None = None,
    http: httpx.Client | None = None,
) -> list[Check]:
    """Every check, in order. ``env``: where the local stack's keys come from (the shell's,
    as ``captioner local up`` reads them); ``http``: the client the provider calls use."""
    env = os.environ if env is None else env
    checks = [_guarded("aws", lambda: check_aws(deployment))]
    if checks[-1].status == "fail":
        return checks  # nothing else can be asked
    checks.append(_guarded("stack", lambda: check_stack(deployment)))
    with httpx.Client(timeout=PROVIDER_TIMEOUT_S) if http is None else _borrowed(http) as client:
        checks.extend(_each("provider", lambda: check_providers(deployment, env, client)))
    checks.extend(_each("bucket", lambda: check_buckets(deployment)))
    checks.extend(_each("queue", lambda: check_queues(deployment)))
    checks.append(_guarded("budget", lambda: check_budget(deployment)))
    checks.append(_guarded("rows", lambda: check_stuck_rows(deployment)))
    return checks


@contextmanager
def _borrowed(client: httpx.Client) -> Iterator[httpx.Client]:
    """A client the caller owns (and closes)."""
    yield client


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:  # a check that cannot run is a failed check, said in one line
        return Check(name, "fail", _describe(exc), "fix what the error says, then run doctor again")


def _each(name: str, checks: Callable[[], Iterator[Check]]) -> list[Check]:
    out: list[Check] = []
    try:
        out.extend(checks())
    except Exception as exc:  # as _guarded, after the checks that did run
        out.append(Check(name, "fail", _describe(exc), "fix what the error says"))
    return out


def _describe(exc: BaseException) -> str:
    from captioner_tools.cli.errors import describe

    return describe(exc) or f"{type(exc).__name__}: {exc}"


# -- AWS and the stack -------------------------------------------------------------------------


def check_aws(deployment: Deployment) -> Check:
    where = deployment.describe()
    try:
        identity = deployment.client("sts").get_caller_identity()
    except (ClientError, BotoCoreError, ToolError) as exc:
        return Check(
            "aws",
            "fail",
            f"{where}: {_describe(exc)}",
            "configure credentials (aws configure, AWS_PROFILE) and a region (AWS_REGION), "
            "or point --endpoint-url at `captioner local up`",
        )
    who = identity.get("Arn") or identity.get("Account", "?")
    return Check("aws", "ok", f"{where}, region {deployment.region}, as {who}")


def check_stack(deployment: Deployment) -> Check:
    try:
        stack = deployment.stack()
    except ToolError as exc:
        return Check("stack", "fail", str(exc), "deploy it: scripts/deploy (or sam deploy)")
    name, status = deployment.stack_name, str(stack.get("StackStatus", "CREATE_COMPLETE"))
    missing = sorted(set(OUTPUT_KEYS.values()) - set(deployment.outputs()))
    if missing:
        return Check(
            "stack",
            "fail",
            f"{name} ({status}) lacks the output(s) {', '.join(missing)}",
            "deploy this template (scripts/deploy), or pass --bucket/--table/--queue-url/--dlq-url",
        )
    if status not in _HEALTHY_STACK:
        state: Status = "fail" if "FAILED" in status or "ROLLBACK" in status else "warn"
        return Check(
            "stack",
            state,
            f"{name} is {status}",
            "wait for the update to finish, or read its events (aws cloudformation describe-stack-events)",
        )
    return Check("stack", "ok", f"{name} {status}, {len(deployment.outputs())} outputs")


def _parameters(deployment: Deployment) -> dict[str, str]:
    try:
        return deployment.parameters()
    except (ToolError, ClientError, BotoCoreError):
        return {}  # names given by flags, no stack: the template's defaults apply


def _providers(parameters: Mapping[str, str]) -> list[str]:
    primary = parameters.get("CaptionProvider") or "modelslab"
    fallbacks = [p.strip() for p in parameters.get("FallbackProviders", "").split(",")]
    return list(dict.fromkeys([primary, *(p for p in fallbacks if p)]))


# -- providers ---------------------------------------------------------------------------------


def check_providers(
    deployment: Deployment, env: Mapping[str, str], http: httpx.Client
) -> Iterator[Check]:
    parameters = _parameters(deployment)
    for provider in _providers(parameters):
        name = f"provider {provider}"
        if provider == "local":
            yield Check(name, "ok", "the offline model: no key, no network (OfflineModelLayer)")
        elif provider == "modelslab":
            yield _check_keyed(
                deployment, env, name, "ModelsLabApiKeySecret", "MODELSLAB_API_KEY",
                lambda key: _modelslab_reply(parameters, env, http, key),
            )  # fmt: skip
        elif provider == "openai":
            yield _check_keyed(
                deployment, env, name, "OpenAIApiKeySecret", "OPENAI_API_KEY",
                lambda key: _openai_reply(parameters, env, http, key), optional=True,
            )  # fmt: skip
        elif provider == "bedrock":
            yield _check_bedrock(deployment, parameters, name)
        else:
            yield Check(name, "fail", f"unknown provider {provider!r}", "deploy a known provider")


def _check_keyed(
    deployment: Deployment,
    env: Mapping[str, str],
    name: str,
    secret_parameter: str,
    variable: str,
    call: Callable[[str | None], Check],
    *,
    optional: bool = False,
) -> Check:
    """The key readable (the secret in AWS; the variable for the local stack), then ``call``."""
    if deployment.is_local:
        key = (env.get(variable) or "").strip() or None
        source = variable
    else:
        secret = _parameters(deployment).get(secret_parameter, "")
        source = f"secret {secret}"
        if not secret:
            if optional:
                return call(None)
            return Check(
                name,
                "fail",
                f"no {secret_parameter}",
                f"deploy with {secret_parameter}=<secret ARN>",
            )
        try:
            raw = deployment.client("secretsmanager").get_secret_value(SecretId=secret)
        except (ClientError, BotoCoreError) as exc:
            return Check(
                name, "fail", f"cannot read {source}: {_describe(exc)}",
                "create the secret (aws secretsmanager create-secret) or fix its ARN and policy",
            )  # fmt: skip
        key = parse_secret(str(raw.get("SecretString") or ""))
    if key is None and not optional:
        fix = f"export {variable}=..." if deployment.is_local else "put the key in the secret"
        return Check(name, "fail", f"no key in {source}", fix)
    return call(key)


def _modelslab_reply(
    parameters: Mapping[str, str], env: Mapping[str, str], http: httpx.Client, key: str | None
) -> Check:
    """Fetch a job id that does not exist: free, and ModelsLab checks the key first."""
    from captioner.providers.modelslab import _error_for  # its one text-matching function

    base = (env.get("MODELSLAB_API_URL") or parameters.get("ModelsLabApiUrl") or "").rstrip("/")
    base = base or DEFAULT_MODELSLAB_URL
    name = "provider modelslab"
    try:
        resp = http.post(f"{base}/image_editing/fetch/{UNPAID_JOB_ID}", json={"key": key})
    except httpx.HTTPError as exc:
        return Check(
            name,
            "fail",
            f"cannot reach {base}: {type(exc).__name__}",
            "check ModelsLabApiUrl (MODELSLAB_API_URL locally) and the network (NAT gateway "
            "in a VPC)",
        )
    fix = "put a valid key with credit in the secret (or MODELSLAB_API_KEY locally), then `captioner redrive`"
    if resp.status_code in (401, 402, 403):
        what = {401: "rejected the key", 402: "has no credit for the key", 403: "forbids the key"}
        return Check(
            name, "fail", f"ModelsLab {what[resp.status_code]} (HTTP {resp.status_code})", fix
        )
    if resp.status_code >= 500:
        return Check(
            name,
            "warn",
            f"ModelsLab answered HTTP {resp.status_code}",
            "wait: objects retry by themselves",
        )
    try:
        reply = resp.json()
    except ValueError:
        return Check(
            name,
            "warn",
            f"ModelsLab sent no JSON (HTTP {resp.status_code})",
            "check ModelsLabApiUrl",
        )
    refused = (
        _error_for(reply, key or "")
        if isinstance(reply, dict) and str(reply.get("status", "")).lower() in ("error", "failed")
        else None
    )
    if isinstance(refused, ProviderConfigError):
        return Check(name, "fail", f"ModelsLab refused the key: {refused}", fix)
    return Check(name, "ok", f"{base} reachable, key accepted (one unpaid fetch)")


def _openai_reply(
    parameters: Mapping[str, str], env: Mapping[str, str], http: httpx.Client, key: str | None
) -> Check:
    """GET /models: free, and it needs a valid key where the server asks for one."""
    base = (env.get("OPENAI_BASE_URL") or parameters.get("OpenAIBaseUrl") or "").rstrip("/")
    base = base or DEFAULT_OPENAI_URL
    name = "provider openai"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        resp = http.get(f"{base}/models", headers=headers)
    except httpx.HTTPError as exc:
        return Check(
            name,
            "fail",
            f"cannot reach {base}: {type(exc).__name__}",
            "check OpenAIBaseUrl and the network",
        )
    if resp.status_code in (401, 403):
        return Check(
            name,
            "fail",
            f"{base} rejected the key (HTTP {resp.status_code})",
            "put a valid key in OpenAIApiKeySecret (OPENAI_API_KEY locally)",
        )
    if resp.status_code >= 400:
        return Check(
            name, "warn", f"{base}/models answered HTTP {resp.status_code}", "check OpenAIBaseUrl"
        )
    return Check(name, "ok", f"{base} reachable" + (", key accepted" if key else ", no key"))


def _check_bedrock(deployment: Deployment, parameters: Mapping[str, str], name: str) -> Check:
    model = parameters.get("BedrockModelId") or "amazon.nova-lite-v1:0"
    if deployment.is_local:
        return Check(
            name,
            "warn",
            f"{model}: Bedrock is not part of the local stack",
            "nothing to do locally",
        )
    try:
        deployment.client("bedrock").get_foundation_model(modelIdentifier=model)
    except (ClientError, BotoCoreError) as exc:
        return Check(
            name,
            "fail",
            f"{model}: {_describe(exc)}",
            "enable model access in the Bedrock console, or fix BedrockModelId",
        )
    return Check(name, "ok", f"{model} available (GetFoundationModel, unpaid)")


# -- buckets -----------------------------------------------------------------------------------


def served_buckets(deployment: Deployment) -> list[str] | None:
    """The upload bucket and the stack's ExistingBucketNames; None when no stack tells."""
    try:
        upload = deployment.outputs().get(OUTPUT_KEYS["bucket"])
    except (ToolError, ClientError, BotoCoreError):
        return None
    existing = _parameters(deployment).get(EXISTING_BUCKETS_PARAMETER, "")
    names = [upload or "", *(n.strip() for n in existing.split(","))]
    return list(dict.fromkeys(n for n in names if n))


def check_buckets(deployment: Deployment) -> Iterator[Check]:
    served = served_buckets(deployment)
    if served is None:
        yield Check(
            "buckets", "warn", "no stack to say which buckets it serves", "pass --stack-name"
        )
        return
    upload = deployment.outputs().get(OUTPUT_KEYS["bucket"])
    role = _function_role(deployment)
    for bucket in served:
        yield _check_bucket(deployment, bucket, is_upload=bucket == upload, role=role)


def _check_bucket(
    deployment: Deployment, bucket: str, *, is_upload: bool, role: str | None
) -> Check:
    name = f"bucket {bucket}"
    s3 = deployment.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            return Check(
                name,
                "fail",
                "does not exist",
                f"create it, or remove it from {EXISTING_BUCKETS_PARAMETER}",
            )
        return Check(
            name, "fail", f"cannot be read ({code})", "check the bucket policy and your permissions"
        )
    events = _sends_events(deployment, bucket, is_upload)
    if events is not None:
        return Check(name, "fail", events[0], events[1])
    if role:
        denied = _role_denied(deployment, role, bucket)
        if denied:
            return Check(
                name,
                "fail",
                f"the function's role may not {', '.join(denied)}",
                f"redeploy with the bucket in {EXISTING_BUCKETS_PARAMETER} (and check its policy/KMS key)",
            )
    via = "S3 notifications to the caption queue" if is_upload else "EventBridge"
    return Check(name, "ok", f"readable, sends its events ({via})")


def _sends_events(deployment: Deployment, bucket: str, is_upload: bool) -> tuple[str, str] | None:
    """None when the bucket sends its events where the stack listens, else (problem, fix)."""
    config = deployment.client("s3").get_bucket_notification_configuration(Bucket=bucket)
    if not is_upload:
        if "EventBridgeConfiguration" in config:
            return None
        return ("does not send its events to EventBridge", f"captioner connect s3://{bucket}")
    try:
        queue = deployment.outputs().get("QueueArn") or _queue_arn(deployment)
    except (ClientError, BotoCoreError, ToolError):
        return None
    if any(c.get("QueueArn") == queue for c in config.get("QueueConfigurations", [])):
        return None
    return (
        "does not notify the caption queue",
        "redeploy the stack (its notification configuration was changed)",
    )


def _queue_arn(deployment: Deployment) -> str:
    attrs = deployment.client("sqs").get_queue_attributes(
        QueueUrl=deployment.queue_url, AttributeNames=["QueueArn"]
    )
    return str(attrs["Attributes"]["QueueArn"])


def _function_role(deployment: Deployment) -> str | None:
    """The caption function's role ARN in AWS; None locally (the local stack's function
    uses the stack's own credentials) or when it cannot be read."""
    if deployment.is_local:
        return None
    try:
        function = deployment.outputs().get("FunctionName")
        if not function:
            return None
        config = deployment.client("lambda").get_function_configuration(FunctionName=function)
        return str(config["Role"])
    except (ClientError, BotoCoreError, ToolError, KeyError):
        return None


def _role_denied(deployment: Deployment, role: str, bucket: str) -> list[str]:
    """What the role's policies do not allow on the bucket (IAM's policy simulator; the
    bucket's own policy and a KMS key can still deny). Empty when allowed or not checkable."""
    partition = role.split(":")[1] if role.count(":") > 1 else "aws"
    wanted = {
        "s3:GetObject": f"arn:{partition}:s3:::{bucket}/*",
        "s3:ListBucket": f"arn:{partition}:s3:::{bucket}",
    }
    denied = []
    try:
        for action, resource in wanted.items():
            results = deployment.client("iam").simulate_principal_policy(
                PolicySourceArn=role, ActionNames=[action], ResourceArns=[resource]
            )["EvaluationResults"]
            if any(r.get("EvalDecision") != "allowed" for r in results):
                denied.append(f"{action} on {resource}")
    except (ClientError, BotoCoreError):
        return []  # no iam:SimulatePrincipalPolicy for us: not checked
    return denied


# -- queues, budget, rows ----------------------------------------------------------------------


def check_queues(deployment: Deployment) -> Iterator[Check]:
    sqs = deployment.client("sqs")
    queue = queue_depth(sqs, deployment.queue_url)
    yield Check(
        "queue",
        "ok",
        f"{queue.visible} waiting, {queue.in_flight} in flight, {queue.delayed} delayed",
    )
    dlq = queue_depth(sqs, deployment.dlq_url)
    if dlq.visible or dlq.in_flight:
        yield Check(
            "dead-letter queue",
            "fail",
            f"{dlq.visible + dlq.in_flight} message(s) dead-lettered",
            "see why (captioner status, the rows' last_error), fix it, then `captioner redrive`",
        )
    else:
        yield Check("dead-letter queue", "ok", "empty")


def check_budget(deployment: Deployment) -> Check:
    from captioner_tools.cli.commands_queue import budget_report

    budget = budget_report(deployment)
    spent, cap, parked = budget["spent_usd"], budget["cap_usd"], budget["parked"]
    of = f" of {cap:.2f} $" if cap else (", no cap" if cap == 0 else "")
    detail = f"{spent:.4f} $ spent on {budget['day']} (UTC){of}"
    if (cap and spent + 1e-9 >= cap) or parked:
        return Check(
            "budget",
            "warn",
            f"{detail}; {parked} row(s) parked by the daily budget",
            "they resume after 00:00 UTC; to resume now, raise DailyBudgetUsd",
        )
    return Check("budget", "ok", detail)


def check_stuck_rows(deployment: Deployment) -> Check:
    count, rows = deployment.captions().idle_pending(now_iso(), limit=STUCK_ROWS_SHOWN)
    if not count:
        return Check("rows", "ok", "no PENDING row waits without a delivery working on it")
    causes = "; ".join(
        f"s3://{r['bucket']}/{r['key']}: {r.get('last_error') or r.get('reason') or 'no cause recorded'}"
        for r in rows
    )
    return Check(
        "rows",
        "warn",
        f"{count} PENDING row(s) wait for a retry ({causes})",
        "fix the cause shown; they retry by themselves, or `captioner redrive` once dead-lettered",
    )
