"""Run `__main__.py` under Pulumi mocks for a stack file, the way `pulumi preview/up` would.

The Pulumi engine cannot run here, so `RecordingMocks` stands in for it and for
the providers: it records every resource and invoke and answers like the real
providers would where the program depends on it (the TLS provider's key and
certificate are generated for real; a RemoteImage gets an image id).

Used by the unit tests (assert on what is declared) and by the e2e suite (apply
what is declared to a real Docker engine and SSH host).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

from components.config import PLACEHOLDER
from components.secrets import SecretReadError

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "homelab-backup"


# ---------------------------------------------------------------- stack config as the CLI would merge it


def committed_stacks(root: Path = ROOT) -> list[str]:
    """Every host stack with a `Pulumi.<stack>.yaml` in `root` (the e2e test stacks aside): the unit tests
    run each one, so a new host's stack file is tested without editing a test."""
    names = (p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in root.glob("Pulumi.*.yaml"))
    return sorted(n for n in names if not n.startswith("e2e-"))


def key_vault_references(stack: str) -> dict[tuple[str, str], set[str]]:
    """(vault, secret) -> the fields the stack file reads from it (its `azure://` references)."""
    found: dict[tuple[str, str], set[str]] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and value.startswith("azure://"):
            vault, secret, *field = value.removeprefix("azure://").split("/")
            found.setdefault((vault, secret), set()).update(field)

    walk(stack_config(stack))
    return found


def project_config(key: str) -> Any:
    """One project-level config value of Pulumi.yaml (`images`, `policy`, ...)."""
    spec = (yaml.safe_load((ROOT / "Pulumi.yaml").read_text()).get("config") or {})[key]
    return spec["value"] if isinstance(spec, dict) and "value" in spec else spec.get("default")


def stack_config(stack: str, overrides: dict[str, Any] | None = None, *, placeholders: bool = False) -> dict[str, Any]:
    """Project-level config values from Pulumi.yaml overlaid by Pulumi.<stack>.yaml, then `overrides`.

    Keys come back fully qualified (`homelab-backup:host`, `pulumi:...`), values as Python objects. The
    committed stack files' host-specific values are 'SET-ME:<example>' placeholders, which a deploy refuses;
    here each becomes its example, as if the user had set it, unless `placeholders` keeps them as committed.
    """
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    values: dict[str, Any] = {}
    for key, spec in (project.get("config") or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        values[full] = spec["value"] if isinstance(spec, dict) and "value" in spec else spec.get("default")
    stack_file = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    values.update(stack_file.get("config") or {})
    if not placeholders:
        values = _examples_set(values)
    values.update(overrides or {})
    return values


def _examples_set(value: Any) -> Any:
    """Every 'SET-ME:<example>' placeholder replaced by its example."""
    if isinstance(value, str):
        return value.removeprefix(PLACEHOLDER)
    if isinstance(value, dict):
        return {k: _examples_set(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_examples_set(v) for v in value]
    return value


# ---------------------------------------------------------------- the mocks


def _unwrap(value: Any) -> Any:
    return rpc.unwrap_rpc_secret(value) if rpc.is_rpc_secret(value) else value


def _self_signed(private_key_pem: str, inputs: dict) -> str:
    key = serialization.load_pem_private_key(_unwrap(private_key_pem).encode(), password=None)
    subject = inputs.get("subject") or {}
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject.get("commonName", "mock"))])
    now = datetime.datetime.now(datetime.UTC)
    alt = [x509.DNSName(d) for d in inputs.get("dnsNames", [])] + [
        x509.IPAddress(ipaddress.ip_address(i)) for i in inputs.get("ipAddresses", [])
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=int(inputs.get("validityPeriodHours", 24))))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Recorded:
    typ: str
    name: str
    inputs: dict
    outputs: dict
    provider: str | None
    resource_id: str
    parent: str = ""  # URN of the parent resource
    options: dict = field(default_factory=dict)  # resource options the engine would see

    @property
    def parent_name(self) -> str:
        return self.parent.rsplit("::", 1)[-1]


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """Also records what MockResourceArgs leaves out: the parent and the options that matter here."""

    def __init__(self, mocks: RecordingMocks):
        super().__init__(mocks)
        self.meta: dict[tuple[str, str], tuple[str, dict]] = {}

    def RegisterResource(self, request):
        self.meta[(request.type, request.name)] = (
            request.parent,
            {
                "additional_secret_outputs": list(request.additionalSecretOutputs),
                "depends_on": list(request.dependencies),
                "delete_before_replace": request.deleteBeforeReplace,
                "replace_on_changes": list(request.replaceOnChanges),
            },
        )
        return super().RegisterResource(request)


#: What the TLS provider keeps in Pulumi state: a key or certificate is made once, and made again only when its
#: inputs change (the certificate's include the key).
KEPT_IN_STATE = {"tls:index/privateKey:PrivateKey", "tls:index/selfSignedCert:SelfSignedCert"}


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, invoke_answers: dict[str, Any] | None = None, state: dict[tuple[str, str], Any] | None = None):
        """`state`: the caller's, kept across runs of one stack (the e2e adapter's deployment), so the TLS key
        and certificate stay those of the first run, as Pulumi's state keeps them; without it, new ones."""
        self.resources: list[Recorded] = []
        self.calls: list[tuple[str, dict]] = []
        self.invoke_answers = invoke_answers or {}
        self.state = {} if state is None else state

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict]:
        if args.typ in KEPT_IN_STATE:
            inputs = json.dumps(args.inputs, sort_keys=True, default=str)
            kept = self.state.get((args.typ, args.name))
            if kept is None or kept[0] != inputs:
                self.state[(args.typ, args.name)] = kept = (inputs, self._made(args))
            outputs = kept[1]
        else:
            outputs = self._made(args)
        resource_id = f"{args.name}-id"
        self.resources.append(Recorded(args.typ, args.name, args.inputs, outputs, args.provider, resource_id))
        return resource_id, outputs

    @staticmethod
    def _made(args: pulumi_mocks.MockResourceArgs) -> dict:
        """The outputs a provider would answer for a new resource."""
        outputs = dict(args.inputs)
        if args.typ == "tls:index/privateKey:PrivateKey":
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
            outputs["privateKeyPem"] = rpc.wrap_rpc_secret(pem)  # the real provider marks it secret
        elif args.typ == "tls:index/selfSignedCert:SelfSignedCert":
            outputs["certPem"] = _self_signed(args.inputs["privateKeyPem"], args.inputs)
        elif args.typ == "docker:index/remoteImage:RemoteImage":
            outputs["imageId"] = "sha256:" + hashlib.sha256(args.inputs["name"].encode()).hexdigest()
        return outputs

    def call(self, args: pulumi_mocks.MockCallArgs) -> dict:
        self.calls.append((args.token, dict(args.args)))
        if args.token in self.invoke_answers:
            answer = self.invoke_answers[args.token]
            return answer(args.args) if callable(answer) else answer
        if args.token == "docker:index/getNetwork:getNetwork":
            return {"id": f"net-{args.args['name']}", "name": args.args["name"], "driver": "bridge"}
        raise NotImplementedError(f"no mock answer for invoke {args.token}")


# ---------------------------------------------------------------- a run


@dataclass
class ProgramRun:
    mocks: RecordingMocks
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)

    @property
    def resources(self) -> list[Recorded]:
        return self.mocks.resources

    def by_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name: str | None = None) -> Recorded:
        found = [r for r in self.by_type(typ) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {typ} {name or ''}, found {[r.name for r in found]}"
        return found[0]


def run_program(
    stack: str,
    *,
    overrides: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    invoke_answers: dict[str, Any] | None = None,
    preview: bool = False,
    placeholders: bool = False,
    as_stack: str | None = None,
    mocks: RecordingMocks | None = None,
) -> ProgramRun:
    """Run __main__.py for `stack` under mocks. `secrets` are config secrets (`config:<key>` references).

    `placeholders`: keep the stack file's 'SET-ME:' values as committed. `as_stack`: run the file as the
    stack of that name (a copied stack file). `mocks`: the caller's, to see what was declared before a failure.
    """
    values = stack_config(stack, overrides, placeholders=placeholders)
    config = {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    secret_keys = []
    for key, value in (secrets or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        config[full] = value
        secret_keys.append(full)

    mocks = mocks or RecordingMocks(invoke_answers)
    monitor = RecordingMonitor(mocks)
    settings.ROOT.set(None)
    pulumi.runtime.set_all_config(config, secret_keys)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=as_stack or stack, preview=preview, monitor=monitor)
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()

    run = ProgramRun(mocks)
    _quiet_about_the_failure_already_raised()
    _sync_await(run_pulumi_func(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")))
    for recorded in mocks.resources:
        recorded.parent, recorded.options = monitor.meta[(recorded.typ, recorded.name)]
    stack_resource = settings.get_root_resource()
    for name, value in stack_resource.outputs.items():  # type: ignore[union-attr]
        output = pulumi.Output.from_input(value)
        run.outputs[name] = _sync_await(output.future())
        if _sync_await(output.is_secret()):
            run.secret_outputs.add(name)
    return run


def _quiet_about_the_failure_already_raised() -> None:
    """A program that fails (bad secret, bad config) fails in every Output that depends on the bad value;
    run_pulumi_func raises the first, and asyncio would print the copies as "Future exception was never
    retrieved" at exit. The first is what the test sees; the copies are not news."""
    loop = _ensure_event_loop()

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if context.get("message") == "Future exception was never retrieved" and isinstance(
            context.get("exception"), SecretReadError | pulumi.RunError
        ):
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def plain_strings(value: Any) -> list[str]:
    """Every string in `value` outside secret-wrapped subtrees: what Pulumi would store in plain text."""
    if rpc.is_rpc_secret(value):
        return []
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [str(k), *plain_strings(v)]]
    if isinstance(value, list | tuple):
        return [s for v in value for s in plain_strings(v)]
    return [value] if isinstance(value, str) else []


def unwrap_all(value: Any) -> Any:
    """The value with secret wrappers removed (to read what a resource really receives)."""
    value = _unwrap(value)
    if isinstance(value, dict):
        return {k: unwrap_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_all(v) for v in value]
    return value
