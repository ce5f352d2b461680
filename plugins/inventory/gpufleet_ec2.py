"""gpufleet_ec2: the EC2 inventory of a gpufleet account, fleet-aware and fast."""

from __future__ import annotations

DOCUMENTATION = r"""
name: gpufleet_ec2
short_description: EC2 inventory for gpufleet GPU fleets
description:
  - Reads EC2 instances from one or more regions, names and groups them like
    M(amazon.aws.aws_ec2) does for its common options, and adds what a gpufleet
    playbook needs to know about each host.
  - Groups every host by its C(gpufleet:role) tag (C(role_gpu), C(role_lb)), pool
    (C(pool_*)), served model (C(model_*)), pool alias (C(alias_*)), lifecycle (C(lifecycle_spot),
    C(lifecycle_on_demand)), availability zone (C(az_*)), instance family
    (C(family_*)), Auto Scaling group (C(asg_*)), and puts hosts whose image is older
    than the newest image with the same C(gpufleet:role) tag owned by the account in
    C(ami_outdated).
  - Sets per host C(ansible_host) (the private IP unless O(host_address) says
    otherwise), C(ec2_private_ip) (where the fleet's other hosts reach it), the
    instance type, GPU count, GPU model and memory per GPU from a built-in table of
    EC2 GPU families, lifecycle, AMI id, name and creation date, availability zone,
    and every tag under C(ec2_tags). Tags are never put in a variable named
    C(tags), a reserved name in Ansible.
  - Sets the fleet's model of each host, which gpufleet's playbooks and filters read, as
    C(gpufleet_role), C(gpufleet_pool), C(gpufleet_model) and C(gpufleet_alias), from the
    C(gpufleet:role), C(gpufleet:pool), C(gpufleet:model) and C(gpufleet:alias) tags (an
    empty string for a tag the host lacks).
  - By default only running and pending instances are listed, unlike
    M(amazon.aws.aws_ec2) which also lists stopped ones. Give an
    C(instance-state-name) filter to change that.
  - Regions are queried concurrently through one boto3 session, with server-side
    filters and the largest page size, and no call per instance. With the cache on,
    the processed inventory is cached, so a warm run makes no AWS call.
  - Group names are always made safe (invalid characters become C(_)), whatever
    the tag values hold.
  - Two instances that get the same hostname are warned about by instance id (an error
    with O(strict)); the inventory keeps the first. A hostname longer than 200 bytes
    (a tag value, say) is shortened to 200 bytes ending in a digest of the whole name,
    with a warning, so Ansible's fact cache can name a file after it; for the same
    reason a C(/) in a hostname (a Name tag such as C(team/gpu-a)) becomes C(_), with a
    warning.
  - Any failure (credentials rejected, an endpoint that cannot be reached or that answers
    something other than EC2, an unknown option) is one line naming the option, region or
    credential, and fails the inventory; with gpufleet's C(ansible.cfg) that fails the run.
  - An inventory cache that cannot be read, holds something else, or cannot be written is
    warned about and EC2 is queried instead; the cache never fails a run.
author: gpufleet
version_added: "0.1.0"
requirements:
  - boto3
  - botocore
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Marks this file as a gpufleet_ec2 inventory source.
    required: true
    type: str
    choices: [gpufleet.fleet.gpufleet_ec2, gpufleet_ec2]
  regions:
    description:
      - Regions to list instances in, queried concurrently.
      - When empty, every region the account can see (one extra DescribeRegions call).
    type: list
    elements: str
    default: []
  filters:
    description:
      - EC2 DescribeInstances filters, as a mapping of filter name to value or list of
        values; applied by EC2, not after the fact.
      - Without an C(instance-state-name) filter, only running and pending instances are listed.
    type: dict
    default: {}
  include_filters:
    description:
      - More filter sets; an instance matching any set (or O(filters)) is listed.
    type: list
    elements: dict
    default: []
  exclude_filters:
    description:
      - Filter sets whose matching instances are left out, whatever the other filters say.
    type: list
    elements: dict
    default: []
  hostnames:
    description:
      - How hosts are named, in order of preference; the first that gives a value wins.
      - Each entry is one of C(dns-name), C(private-dns-name), C(ip-address),
        C(private-ip-address), C(instance-id), another DescribeInstances filter name,
        C(tag:NAME) (the tag's value), C(tag:NAME=VALUE) (C(NAME_VALUE) when the tag
        has that value), or a mapping with C(name), and optionally C(prefix) and
        C(separator) (default C(_)).
      - Any other entry is refused, naming it.
    type: list
    elements: raw
    default: [dns-name, private-dns-name]
  host_address:
    description: Which address C(ansible_host) is set to.
    type: str
    default: private-ip-address
    choices: [private-ip-address, ip-address, private-dns-name, dns-name]
  fleet_groups:
    description:
      - Add the gpufleet groups (role, pool, model, alias, lifecycle, az, family, asg,
        ami_outdated).
    type: bool
    default: true
  strict_permissions:
    description:
      - When true, an access denied in a region fails the inventory.
      - When false, that region is skipped with a warning.
      - Credentials that EC2 rejects (C(AuthFailure), an unknown or expired key) always
        fail the inventory, naming the region.
    type: bool
    default: true
  profile:
    description: AWS profile from the shared credentials and config files.
    type: str
    aliases: [aws_profile, boto_profile]
    env:
      - name: AWS_PROFILE
  aws_access_key:
    description: AWS access key id. Without it boto3's usual chain is used.
    type: str
    aliases: [aws_access_key_id, access_key, ec2_access_key]
    env:
      - name: AWS_ACCESS_KEY_ID
  aws_secret_key:
    description: AWS secret access key.
    type: str
    aliases: [aws_secret_access_key, secret_key, ec2_secret_key]
    env:
      - name: AWS_SECRET_ACCESS_KEY
  session_token:
    description: AWS session token for temporary credentials.
    type: str
    aliases: [aws_session_token, security_token]
    env:
      - name: AWS_SESSION_TOKEN
  endpoint_url:
    description: EC2 endpoint to use instead of AWS's, for example a local EC2 API.
    type: str
    aliases: [aws_endpoint_url]
    env:
      - name: AWS_URL
  assume_role_arn:
    description: Role to assume (through STS) before listing instances.
    type: str
  assume_role_external_id:
    description: External id to pass when assuming O(assume_role_arn).
    type: str
  max_attempts:
    description:
      - Attempts per API call, throttling included; botocore backs off between them.
    type: int
    default: 10
"""

EXAMPLES = r"""
---
# inventory/production.gpufleet_ec2.yml
plugin: gpufleet.fleet.gpufleet_ec2
regions: [us-east-1, us-west-2]
filters:
  tag:gpufleet:env: production
hostnames:
  - tag:Name
  - instance-id
keyed_groups:
  - key: ec2_tags['gpufleet:pool']
    prefix: pool
compose:
  ollama_models_expected: ec2_tags['gpufleet:model'] | default('')

---
# Through a role in another account, skipping regions the role may not list.
plugin: gpufleet.fleet.gpufleet_ec2
regions: [eu-west-1, eu-central-1]
assume_role_arn: arn:aws:iam::123456789012:role/gpufleet-inventory
assume_role_external_id: gpufleet
strict_permissions: false
exclude_filters:
  - tag:gpufleet:maintenance: "true"

---
# A warm cache answers without calling AWS for an hour.
plugin: gpufleet.fleet.gpufleet_ec2
regions: [us-east-1]
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: .cache/inventory
cache_timeout: 3600
"""

import functools
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.module_utils.common.dict_transformations import (
    _camel_to_snake,
    camel_dict_to_snake_dict,
)
from ansible.plugins.inventory import (
    BaseInventoryPlugin,
    Cacheable,
    Constructable,
    get_cache_plugin,
)

try:
    import boto3
    import botocore.config
    import botocore.exceptions
    from botocore.parsers import ResponseParserError
except ImportError:  # reported when the plugin is used, so ansible-doc still works
    boto3 = None

ROLE_TAG = "gpufleet:role"
POOL_TAG = "gpufleet:pool"
MODEL_TAG = "gpufleet:model"
ALIAS_TAG = "gpufleet:alias"
ASG_TAG = "aws:autoscaling:groupName"
DEFAULT_STATES = ["running", "pending"]
REGION_NAME = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
ACCESS_DENIED = {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"}
# Bad credentials are never a region to skip: every region would say the same.
CREDENTIALS_REJECTED = {
    "AuthFailure",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "RequestExpired",
}
THROTTLED = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
PLURALS = {"dict": "mappings", "str": "strings", "int": "integers", "bool": "booleans"}
# Ansible's fact cache names a file after each host (after a prefix); file names stop at 255.
MAX_HOSTNAME_BYTES = 200

# EC2 GPU families: (GPU, memory per GPU in GiB, GPUs by size, GPUs otherwise).
GPU_FAMILIES: dict[str, tuple[str, int, dict[str, int], int]] = {
    "g4dn": ("NVIDIA T4", 16, {"12xlarge": 4, "metal": 8}, 1),
    "g4ad": ("AMD Radeon Pro V520", 8, {"8xlarge": 2, "16xlarge": 4}, 1),
    "g5": ("NVIDIA A10G", 24, {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}, 1),
    "g5g": ("NVIDIA T4G", 16, {"16xlarge": 2, "metal": 2}, 1),
    "g6": ("NVIDIA L4", 24, {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}, 1),
    "gr6": ("NVIDIA L4", 24, {}, 1),
    "g6e": ("NVIDIA L40S", 48, {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}, 1),
    "p3": ("NVIDIA V100", 16, {"8xlarge": 4, "16xlarge": 8}, 1),
    "p3dn": ("NVIDIA V100", 32, {}, 8),
    "p4d": ("NVIDIA A100", 40, {}, 8),
    "p4de": ("NVIDIA A100", 80, {}, 8),
    "p5": ("NVIDIA H100", 80, {"4xlarge": 1}, 8),
    "p5e": ("NVIDIA H200", 141, {}, 8),
    "p5en": ("NVIDIA H200", 141, {}, 8),
}

# DescribeInstances filter names a hostname preference may use, and where they read.
HOSTNAME_SOURCES: dict[str, tuple[str, ...]] = {
    "dns-name": ("PublicDnsName",),
    "private-dns-name": ("PrivateDnsName",),
    "ip-address": ("PublicIpAddress",),
    "private-ip-address": ("PrivateIpAddress",),
    "instance-id": ("InstanceId",),
    "image-id": ("ImageId",),
    "instance-type": ("InstanceType",),
    "key-name": ("KeyName",),
    "subnet-id": ("SubnetId",),
    "vpc-id": ("VpcId",),
    "availability-zone": ("Placement", "AvailabilityZone"),
    "network-interface.private-dns-name": ("NetworkInterfaces", "PrivateDnsName"),
}
SIMPLE_PATH = re.compile(
    r"^\s*([A-Za-z_]\w*)((?:\s*\.\s*[A-Za-z_]\w*|\s*\[\s*(?:'[^']*'|\"[^\"]*\"|\d+)\s*\])*)\s*$"
)
PATH_PART = re.compile(r"\.\s*([A-Za-z_]\w*)|\[\s*(?:'([^']*)'|\"([^\"]*)\"|(\d+))\s*\]")


def gpu_profile(instance_type: str) -> tuple[int, str, int]:
    """GPU count, model and memory per GPU in GiB for an instance type; 0, '', 0 without GPUs."""
    family, _, size = instance_type.partition(".")
    known = GPU_FAMILIES.get(family)
    if known is None:
        return 0, "", 0
    model, memory, by_size, otherwise = known
    return by_size.get(size, otherwise), model, memory


def boto_filters(filters: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "Name": str(name),
            "Values": [str(v) for v in values] if isinstance(values, list) else [str(values)],
        }
        for name, values in filters.items()
    ]


def tag_dict(instance: Mapping[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag.get("Value", "") for tag in instance.get("Tags", [])}


def _attribute_chain(instance: Mapping[str, Any], chain: tuple[str, ...]) -> Any:
    value: Any = instance
    for key in chain:
        if isinstance(value, list):
            value = [item.get(key) for item in value if isinstance(item, Mapping)]
            value = value[0] if len(value) == 1 else value
        elif isinstance(value, Mapping):
            value = value.get(key)
        else:
            return None
    return value


def _tag_hostname(preference: str, tags: Mapping[str, str]) -> str | None:
    for wanted in preference.split("tag:", 1)[1].split(","):
        name, sep, value = wanted.partition("=")
        if sep and tags.get(name) == value:
            return f"{name}_{value}"
        if not sep and tags.get(name):
            return tags[name]
    return None


def _has_type(value: Any, expected: str) -> bool:
    """Whether an option's value (None: unset) is of its documented type."""
    from ansible.module_utils.parsing.convert_bool import BOOLEANS

    if value is None:
        return True
    if expected == "bool":
        return value in BOOLEANS
    if expected == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    checks = {"list": list, "dict": Mapping, "str": str}
    return expected not in checks or isinstance(value, checks[expected])


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _is_hostname_source(source: Any) -> bool:
    if not isinstance(source, str):
        return False
    if source.startswith("tag:"):
        return bool(source.removeprefix("tag:").strip(","))
    return source in HOSTNAME_SOURCES


def _listed(region: str, answer: Any, key: str) -> list[dict[str, Any]]:
    """The list an EC2 answer carries under key; an answer without it is not EC2's."""
    items = answer.get(key) if isinstance(answer, Mapping) else None
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise FleetError(
            f"region {region}: the endpoint's answer is not EC2's (it has no {key}); "
            "check endpoint_url"
        )
    return items


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_processed_inventory(data: Any) -> bool:
    """The shape _build returns: hosts to variables, groups and parents to name lists."""
    if not isinstance(data, dict) or set(data) != {"hosts", "groups", "children"}:
        return False
    if not isinstance(data["hosts"], dict) or not all(
        isinstance(v, dict) for v in data["hosts"].values()
    ):
        return False
    return all(
        isinstance(data[part], dict)
        and all(
            isinstance(names, list) and all(isinstance(n, str) for n in names)
            for names in data[part].values()
        )
        for part in ("groups", "children")
    )


def shortened_hostname(name: str) -> str:
    """A name of at most MAX_HOSTNAME_BYTES bytes: the start of the name, then a digest of the
    whole of it, so two long names that share a start stay two hosts."""
    encoded = name.encode()
    if len(encoded) <= MAX_HOSTNAME_BYTES:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:12]
    head = encoded[: MAX_HOSTNAME_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{head}-{digest}"


class FleetError(AnsibleParserError):
    """One line that names the option, region or credential at fault."""

    def __init__(self, message: str) -> None:
        super().__init__(f"gpufleet_ec2: {message}")


class RegionSkipped(Exception):
    pass


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "gpufleet.fleet.gpufleet_ec2"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and path.endswith(
            ("gpufleet_ec2.yml", "gpufleet_ec2.yaml")
        )

    # -- reading the source -------------------------------------------------------------------

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache=cache)
        config = self._read_config_data(path)
        self._refuse_unknown_options(config, path)
        self._check_hostnames(self.get_option("hostnames"))
        if boto3 is None:
            raise FleetError("boto3 and botocore are required: pip install boto3")
        cache_key = self.get_cache_key(path)
        processed = self._cached(cache_key) if self.get_option("cache") and cache else None
        if processed is None:
            processed = self._build(self._query())
            if self.get_option("cache"):
                # One string, not a tree: the cache plugin then decodes it in one step.
                self._cache[cache_key] = json.dumps(processed)
        self._populate(processed)

    def _read_config_data(self, path: str) -> dict[str, Any]:
        """As Ansible's, except that a cache plugin that cannot start (a cache directory that
        cannot be made or written) is warned about and left out: EC2 may well be reachable."""
        try:
            config = self.loader.load_from_file(path, cache="none", trusted_as_template=True)
        except Exception as exc:
            raise AnsibleParserError(str(exc)) from None
        if not isinstance(config, Mapping) or config.get("plugin") != self.NAME:
            raise AnsibleParserError(f"{path} is not a {self.NAME} inventory source")
        self.set_options(direct=config, var_options=self._vars)
        if self.get_option("cache"):
            options = {
                key: self.get_option(option)
                for key, option in (
                    ("_uri", "cache_connection"),
                    ("_timeout", "cache_timeout"),
                    ("_prefix", "cache_prefix"),
                )
                if self.get_option(option) is not None
            }
            try:
                self._cache = get_cache_plugin(self.get_option("cache_plugin"), **options)
            except AnsibleError as exc:
                self.display.warning(
                    f"gpufleet_ec2: the inventory cache is left out, as it cannot be used "
                    f"({_first_line(exc)}); EC2 is queried on every run until that is fixed"
                )
                self._cache = get_cache_plugin("ansible.builtin.memory")
        return config

    def _cached(self, cache_key: str) -> dict[str, Any] | None:
        """The processed inventory from the cache; None (and a warning) when it is missing,
        unreadable or not what this plugin writes, so EC2 is queried instead."""
        try:
            text = self._cache[cache_key]
        except KeyError:
            return None
        except Exception as exc:  # the cache plugin's own errors are of any kind
            self.display.warning(
                f"gpufleet_ec2: the inventory cache cannot be read ({_first_line(exc)}); "
                "querying EC2 instead"
            )
            return None
        try:
            processed = json.loads(text)
        except (TypeError, ValueError):
            processed = None
        if not _is_processed_inventory(processed):
            self.display.warning(
                f"gpufleet_ec2: the inventory cache entry {cache_key} is not an inventory this "
                "plugin wrote; querying EC2 and replacing it"
            )
            return None
        return processed

    def update_cache_if_changed(self) -> None:
        """Ansible writes the cache after parsing; a cache that cannot be written is a warning,
        not a failed inventory: the hosts were read from EC2 all the same."""
        if not hasattr(self, "_cache"):
            return  # this source has no cache
        try:
            super().update_cache_if_changed()
        except Exception as exc:
            self.display.warning(
                f"gpufleet_ec2: the inventory cache could not be written ({_first_line(exc)}); "
                "the next run queries EC2 again"
            )

    def _refuse_unknown_options(self, config: Mapping[str, Any], path: str) -> None:
        """Ansible ignores unknown keys and coerces types loosely; an operator's typo should
        fail instead, naming the option."""
        from ansible import constants as C

        definitions = C.config.get_configuration_definitions("inventory", self._load_name)
        by_name = {}
        for name, definition in definitions.items():
            for alias in [name, *definition.get("aliases", [])]:
                by_name[alias] = definition
        for key, value in config.items():
            definition = by_name.get(key)
            if definition is None:
                raise FleetError(f"unknown option {key!r} in {path}")
            expected = definition.get("type", "str")
            if not _has_type(value, expected):
                raise FleetError(f"option {key!r} must be {_a(expected)}, got {value!r}")
            elements = definition.get("elements")
            if expected == "list" and value and elements:
                for item in value:
                    if not _has_type(item, elements):
                        raise FleetError(
                            f"option {key!r} must be a list of {PLURALS.get(elements, elements)}, "
                            f"but holds {item!r}"
                        )

    @staticmethod
    def _check_hostnames(preferences: list[Any]) -> None:
        """Every hostnames entry must name a source; an unknown one would otherwise become the
        literal name of every host."""
        for preference in preferences:
            if isinstance(preference, Mapping):
                unknown = set(preference) - {"name", "prefix", "separator"}
                if "name" not in preference or unknown:
                    raise FleetError(
                        f"hostnames: {dict(preference)!r} must have 'name' and may have only "
                        "'prefix' and 'separator' besides"
                    )
                sources = [preference["name"], preference.get("prefix")]
            else:
                sources = [preference]
            for source in sources:
                if source is None or _is_hostname_source(source):
                    continue
                raise FleetError(
                    f"hostnames: {source!r} is not a hostname source; use tag:NAME, "
                    f"tag:NAME=VALUE or one of {', '.join(HOSTNAME_SOURCES)}"
                )

    # -- talking to EC2 -----------------------------------------------------------------------

    def _session(self) -> Any:
        try:
            session = boto3.session.Session(
                profile_name=self.get_option("profile"),
                aws_access_key_id=self.get_option("aws_access_key"),
                aws_secret_access_key=self.get_option("aws_secret_key"),
                aws_session_token=self.get_option("session_token"),
            )
        except botocore.exceptions.ProfileNotFound:
            raise FleetError(
                f"profile {self.get_option('profile')!r} is not in the AWS config files"
            ) from None
        role = self.get_option("assume_role_arn")
        if not role:
            return session
        request = {"RoleArn": role, "RoleSessionName": "gpufleet-inventory"}
        if self.get_option("assume_role_external_id"):
            request["ExternalId"] = self.get_option("assume_role_external_id")
        try:
            home = (self.get_option("regions") or ["us-east-1"])[0]
            sts = session.client(
                "sts",
                region_name=home,
                endpoint_url=self.get_option("endpoint_url"),
                config=self._botocore_config(),
            )
            credentials = sts.assume_role(**request)["Credentials"]
        except botocore.exceptions.ClientError as exc:
            raise FleetError(f"assume_role_arn {role}: {exc}") from None
        except botocore.exceptions.NoCredentialsError:
            raise FleetError(self._no_credentials()) from None
        return boto3.session.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )

    def _botocore_config(self) -> Any:
        return botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": self.get_option("max_attempts")},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=10,
        )

    @staticmethod
    def _no_credentials() -> str:
        return (
            "no AWS credentials: set profile, or aws_access_key and aws_secret_key, "
            "or the AWS_* environment variables"
        )

    def _regions(self, session: Any) -> list[str]:
        regions = self.get_option("regions")
        for region in regions:
            if not isinstance(region, str) or not REGION_NAME.match(region):
                raise FleetError(f"regions: {region!r} is not an AWS region name")
        if regions:
            # Plain str: values from the source file are trusted templates; host data is not.
            return [str(region) for region in dict.fromkeys(regions)]
        client = session.client(
            "ec2",
            region_name="us-east-1",
            endpoint_url=self.get_option("endpoint_url"),
            config=self._botocore_config(),
        )
        answer = self._call("us-east-1", client.describe_regions)
        return sorted(r["RegionName"] for r in _listed("us-east-1", answer, "Regions"))

    def _call(self, region: str, method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except botocore.exceptions.NoCredentialsError:
            raise FleetError(self._no_credentials()) from None
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", str(exc))
            if code in CREDENTIALS_REJECTED:
                raise FleetError(
                    f"region {region}: credentials rejected ({code}): {message}"
                ) from None
            if code in ACCESS_DENIED:
                if not self.get_option("strict_permissions"):
                    raise RegionSkipped(f"{code}: {message}") from None
                raise FleetError(f"region {region}: access denied ({code}): {message}") from None
            if code in THROTTLED:
                raise FleetError(
                    f"region {region}: still throttled by EC2 after "
                    f"{self.get_option('max_attempts')} attempts ({code})"
                ) from None
            raise FleetError(f"region {region}: {code}: {message}") from None
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectTimeoutError,
        ) as exc:
            raise FleetError(f"region {region}: cannot reach the EC2 endpoint: {exc}") from None
        except ResponseParserError as exc:
            raise FleetError(
                f"region {region}: the endpoint's answer is not EC2's "
                f"({_first_line(exc)[:160]}); check endpoint_url"
            ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise FleetError(f"region {region}: {exc}") from None

    def _filter_sets(self) -> tuple[list[list[dict[str, Any]]], list[list[dict[str, Any]]]]:
        include = [self.get_option("filters") or {}] if self.get_option("filters") else []
        include += self.get_option("include_filters")
        include_sets = []
        for filters in include or [{}]:
            boto = boto_filters(filters)
            if not any(f["Name"] == "instance-state-name" for f in boto):
                boto.append({"Name": "instance-state-name", "Values": DEFAULT_STATES})
            include_sets.append(boto)
        return include_sets, [boto_filters(f) for f in self.get_option("exclude_filters")]

    def _query(self) -> list[dict[str, Any]]:
        """Instances of every region, each with its region and its AMI, in one list."""
        session = self._session()
        regions = self._regions(session)
        config = self._botocore_config()
        clients = {
            r: session.client(
                "ec2", region_name=r, endpoint_url=self.get_option("endpoint_url"), config=config
            )
            for r in regions
        }
        include_sets, exclude_sets = self._filter_sets()
        with ThreadPoolExecutor(max_workers=min(16, len(regions)) or 1) as pool:
            results = list(
                pool.map(
                    lambda r: self._query_region(r, clients[r], include_sets, exclude_sets), regions
                )
            )
        instances = [instance for region_instances in results for instance in region_instances]
        return sorted(instances, key=lambda i: i["InstanceId"])

    def _query_region(
        self,
        region: str,
        client: Any,
        include_sets: list,
        exclude_sets: list,
    ) -> list[dict[str, Any]]:
        try:
            excluded = {
                i["InstanceId"] for f in exclude_sets for i in self._describe(region, client, f)
            }
            found: dict[str, dict[str, Any]] = {}
            for filters in include_sets:
                for instance in self._describe(region, client, filters):
                    if instance["InstanceId"] not in excluded:
                        found.setdefault(instance["InstanceId"], instance)
            images = self._images(region, client, {i.get("ImageId") for i in found.values()})
        except RegionSkipped as skipped:
            self.display.warning(f"gpufleet_ec2: region {region} skipped: {skipped}")
            return []
        for instance in found.values():
            instance["_region"] = region
            instance["_image"] = images["by_id"].get(instance.get("ImageId"), {})
            instance["_newest_by_role"] = images["newest_by_role"]
        return list(found.values())

    def _describe(self, region: str, client: Any, filters: list) -> Iterator[dict[str, Any]]:
        paginator = client.get_paginator("describe_instances")
        pages = self._call(
            region,
            lambda: list(paginator.paginate(Filters=filters, PaginationConfig={"PageSize": 1000})),
        )
        for page in pages:
            for reservation in _listed(region, page, "Reservations"):
                yield from reservation.get("Instances", [])

    def _images(self, region: str, client: Any, image_ids: set[str | None]) -> dict[str, Any]:
        """The AMIs the instances run, and the newest image per gpufleet role: two calls."""
        ids = sorted(i for i in image_ids if i)
        by_id = {}
        if ids:
            used = self._call(
                region, client.describe_images, Filters=[{"Name": "image-id", "Values": ids}]
            )
            by_id = {image["ImageId"]: image for image in _listed(region, used, "Images")}
        owned = self._call(
            region,
            client.describe_images,
            Owners=["self"],
            Filters=[{"Name": "tag-key", "Values": [ROLE_TAG]}],
        )
        newest_by_role: dict[str, str] = {}
        for image in _listed(region, owned, "Images"):
            role = tag_dict(image).get(ROLE_TAG)
            created = image.get("CreationDate", "")
            if role and created > newest_by_role.get(role, ""):
                newest_by_role[role] = created
        return {"by_id": by_id, "newest_by_role": newest_by_role}

    # -- turning instances into hosts ---------------------------------------------------------

    def _build(self, instances: list[dict[str, Any]]) -> dict[str, Any]:
        """The processed inventory: host variables and group members, ready to cache."""
        processed: dict[str, Any] = {"hosts": {}, "groups": {}, "children": {}}
        strict = self.get_option("strict")
        for name, instance in self._named(instances, strict).items():
            hostvars = self._hostvars(instance)
            context = HostContext(instance, hostvars)
            for var, expression in (self.get_option("compose") or {}).items():
                try:
                    hostvars[var] = context.composed[var] = self._evaluate(expression, context)
                except Exception as exc:
                    if strict:
                        raise FleetError(f"compose {var} for host {name}: {exc}") from None
            processed["hosts"][name] = hostvars
            groups = (
                self._fleet_groups(instance, hostvars) if self.get_option("fleet_groups") else []
            )
            groups += self._conditional_groups(context, name, strict)
            groups += self._keyed_groups(context, name, strict, processed["children"])
            for group in dict.fromkeys(groups):
                processed["groups"].setdefault(group, []).append(name)
        return processed

    def _named(self, instances: list[dict[str, Any]], strict: bool) -> dict[str, dict[str, Any]]:
        """Each instance under its hostname; what cannot be named, or is named twice, is told
        by instance id, and fails the inventory under strict."""
        named: dict[str, dict[str, Any]] = {}
        nameless: list[str] = []
        duplicates: dict[str, list[str]] = {}
        for instance in instances:
            name = self._hostname(instance)
            if name is None:
                nameless.append(instance["InstanceId"])
            elif name in named:
                first = named[name]["InstanceId"]
                duplicates.setdefault(name, [first]).append(instance["InstanceId"])
            else:
                named[name] = instance
        problems = [
            f"hostname {name} is given to {', '.join(ids)}; only {ids[0]} is listed"
            for name, ids in duplicates.items()
        ]
        if nameless:
            problems.append(f"no hostnames entry has a value for {', '.join(nameless)}; left out")
        for problem in problems:
            if strict:
                raise FleetError(f"{problem} (hostnames must name each instance once)")
            self.display.warning(f"gpufleet_ec2: {problem}")
        return named

    def _hostname(self, instance: dict[str, Any]) -> str | None:
        tags = tag_dict(instance)
        for preference in self.get_option("hostnames"):
            if isinstance(preference, Mapping):
                name = self._hostname_from(preference["name"], instance, tags)
                prefix = (
                    self._hostname_from(preference["prefix"], instance, tags)
                    if "prefix" in preference
                    else None
                )
                if name and prefix:
                    name = prefix + preference.get("separator", "_") + name
            else:
                name = self._hostname_from(preference, instance, tags)
            if name:
                safe = self._sanitize_group_name(name) if ":" in name else name
                return self._short(safe, instance)
        return None

    def _short(self, name: str, instance: dict[str, Any]) -> str:
        if "/" in name:
            fitted = name.replace("/", "_")
            self.display.warning(
                f"gpufleet_ec2: the hostname of {instance['InstanceId']}, {name}, holds a '/', "
                f"which no fact cache file can be named with; it is listed as {fitted}"
            )
            name = fitted
        short = shortened_hostname(name)
        if short != name:
            self.display.warning(
                f"gpufleet_ec2: the hostname of {instance['InstanceId']} is "
                f"{len(name.encode())} bytes, over {MAX_HOSTNAME_BYTES}; it is listed as {short}"
            )
        return short

    @staticmethod
    def _hostname_from(
        preference: str,
        instance: dict[str, Any],
        tags: dict[str, str],
    ) -> str | None:
        if preference.startswith("tag:"):
            return _tag_hostname(preference, tags)
        value = _attribute_chain(instance, HOSTNAME_SOURCES[preference])
        if isinstance(value, list):
            value = value[0] if value else None
        return str(value) if value else None

    def _hostvars(self, instance: dict[str, Any]) -> dict[str, Any]:
        tags = tag_dict(instance)
        image = instance["_image"]
        instance_type = instance.get("InstanceType", "")
        gpus, gpu_model, gpu_memory = gpu_profile(instance_type)
        zone = instance.get("Placement", {}).get("AvailabilityZone", "")
        address_source = HOSTNAME_SOURCES[self.get_option("host_address")]
        return {
            "ansible_host": _attribute_chain(instance, address_source),
            "ec2_instance_id": instance["InstanceId"],
            "ec2_private_ip": instance.get("PrivateIpAddress", ""),
            "ec2_region": instance["_region"],
            "ec2_availability_zone": zone,
            "ec2_instance_type": instance_type,
            "ec2_lifecycle": "spot" if instance.get("InstanceLifecycle") == "spot" else "on_demand",
            "ec2_ami_id": instance.get("ImageId", ""),
            "ec2_ami_name": image.get("Name", ""),
            "ec2_ami_creation_date": image.get("CreationDate", ""),
            "ec2_gpu_count": gpus,
            "ec2_gpu_model": gpu_model,
            "ec2_gpu_memory_gib": gpu_memory,
            "ec2_tags": tags,
            "gpufleet_role": tags.get(ROLE_TAG, ""),
            "gpufleet_pool": tags.get(POOL_TAG, ""),
            "gpufleet_model": tags.get(MODEL_TAG, ""),
            "gpufleet_alias": tags.get(ALIAS_TAG, ""),
        }

    def _fleet_groups(self, instance: dict[str, Any], hostvars: dict[str, Any]) -> list[str]:
        tags = hostvars["ec2_tags"]
        wanted = [
            ("role", hostvars["gpufleet_role"]),
            ("pool", hostvars["gpufleet_pool"]),
            ("model", hostvars["gpufleet_model"]),
            ("alias", hostvars["gpufleet_alias"]),
            ("lifecycle", hostvars["ec2_lifecycle"]),
            ("az", hostvars["ec2_availability_zone"]),
            ("family", hostvars["ec2_instance_type"].partition(".")[0]),
            ("asg", tags.get(ASG_TAG)),
        ]
        groups = [
            self._sanitize_group_name(f"{prefix}_{value}") for prefix, value in wanted if value
        ]
        newest = instance["_newest_by_role"].get(hostvars["gpufleet_role"], "")
        created = hostvars["ec2_ami_creation_date"]
        if newest and (not created or created < newest):
            groups.append("ami_outdated")
        return groups

    def _conditional_groups(self, context: HostContext, host: str, strict: bool) -> list[str]:
        groups = []
        for group, condition in (self.get_option("groups") or {}).items():
            try:
                self.templar.available_variables = context.as_variables()
                if self.templar.evaluate_conditional(condition):
                    groups.append(self._sanitize_group_name(group))
            except Exception as exc:
                if strict:
                    raise FleetError(f"groups {group} for host {host}: {exc}") from None
        return groups

    def _keyed_groups(
        self, context: HostContext, host: str, strict: bool, children: dict[str, list[str]]
    ) -> list[str]:
        """keyed_groups with the naming rules of Ansible's constructed plugins."""
        empty = (None, "")
        groups = []
        for keyed in self.get_option("keyed_groups") or []:
            if not isinstance(keyed, Mapping):
                continue
            try:
                key = self._evaluate(keyed.get("key"), context)
            except Exception as exc:
                if strict:
                    raise FleetError(
                        f"keyed_groups {keyed.get('key')} for host {host}: {exc}"
                    ) from None
                continue
            default = keyed.get("default_value")
            trailing = keyed.get("trailing_separator")
            if trailing is not None and default is not None:
                raise FleetError(
                    "keyed_groups: default_value and trailing_separator are mutually exclusive"
                )
            prefix, separator = keyed.get("prefix", ""), keyed.get("separator", "_")
            if isinstance(key, str):
                bare = [key] if key else ([default] if default is not None else [])
            elif key is None:
                bare = [default] if default is not None else []
            elif isinstance(key, list):
                bare = [default if item in empty and default is not None else item for item in key]
            elif isinstance(key, Mapping):
                bare = []
                for name, value in key.items():
                    if value in empty and default is not None:
                        bare.append(f"{name}{separator}{default}")
                    elif value in empty and trailing is False:
                        bare.append(str(name))
                    else:
                        bare.append(f"{name}{separator}{value}")
            else:
                if strict:
                    raise FleetError(
                        f"keyed_groups {keyed.get('key')} for host {host}: "
                        f"expected a string, list or mapping, got {type(key)}"
                    )
                continue
            if prefix == "" and self.get_option("leading_separator") is False:
                separator = ""
            for name in bare:
                group = self._sanitize_group_name(f"{prefix}{separator}{name}")
                groups.append(group)
                parent = keyed.get("parent_group")
                if parent:
                    members = children.setdefault(self._sanitize_group_name(parent), [])
                    if group not in members:
                        members.append(group)
        return groups

    def _evaluate(self, expression: Any, context: HostContext) -> Any:
        """A plain variable path (a.b, a['b']) is read directly; anything else goes to Jinja."""
        if not isinstance(expression, str):
            return expression
        match = SIMPLE_PATH.match(expression)
        if match is None or match.group(1) in ("true", "false", "none", "True", "False", "None"):
            self.templar.available_variables = context.as_variables()
            return self.templar.evaluate_expression(expression)
        value = context[match.group(1)]
        for attribute, single, double, index in PATH_PART.findall(match.group(2)):
            value = value[int(index)] if index else value[attribute or single or double]
        return value

    @staticmethod
    def _sanitize_group_name(name: str) -> str:
        from ansible.inventory.group import to_safe_group_name

        return to_safe_group_name(name, force=True, silent=True)

    # -- into Ansible's inventory -------------------------------------------------------------

    def _populate(self, processed: Mapping[str, Any]) -> None:
        inventory = self.inventory
        for host, hostvars in processed["hosts"].items():
            inventory.add_host(host)
            for var, value in hostvars.items():
                inventory.set_variable(host, var, value)
        for group, members in processed["groups"].items():
            inventory.add_group(group)
            for host in members:
                inventory.add_host(host, group)
        for parent, groups in processed["children"].items():
            inventory.add_group(parent)
            for group in groups:
                inventory.add_child(parent, group)


class HostContext(Mapping):
    """What compose, groups and keyed_groups see of one host, as amazon.aws.aws_ec2 shows it.

    The instance in snake_case (placement.availability_zone, private_ip_address, ...),
    its tags as `tags`, gpufleet's own variables, and the variables composed so far.
    Plain paths read the instance through SnakeView; only Jinja gets a converted copy.
    """

    def __init__(self, instance: dict[str, Any], hostvars: dict[str, Any]) -> None:
        self.instance = instance
        self.hostvars = hostvars
        self.composed: dict[str, Any] = {}
        self.view = SnakeView(instance, region_of_placement=True)
        self._converted: dict[str, Any] | None = None

    def __getitem__(self, key: str) -> Any:
        for layer in (self.composed, self.hostvars):
            if key in layer:
                return layer[key]
        if key == "tags":
            return self.hostvars["ec2_tags"]
        return self.view[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_variables())

    def __len__(self) -> int:
        return len(self.as_variables())

    def as_variables(self) -> dict[str, Any]:
        """Everything as one dict, for Jinja; the instance is converted once per host."""
        if self._converted is None:
            raw = {k: v for k, v in self.instance.items() if not k.startswith("_")}
            self._converted = camel_dict_to_snake_dict(raw, ignore_list=["Tags"])
            placement = self._converted.setdefault("placement", {})
            placement["region"] = self.view["placement"]["region"]
            self._converted["tags"] = self.hostvars["ec2_tags"]
        return {**self._converted, **self.hostvars, **self.composed}


@functools.lru_cache(maxsize=4096)
def snake_name(camel: str) -> str:
    return _camel_to_snake(camel)


class SnakeView(Mapping):
    """A boto3 dict read with amazon.aws.aws_ec2's snake_case keys, converted on access."""

    def __init__(self, data: Mapping[str, Any], region_of_placement: bool = False) -> None:
        self.data = data
        self.keys_by_snake = {snake_name(k): k for k in data if not k.startswith("_")}
        self.region_of_placement = region_of_placement

    def __getitem__(self, key: str) -> Any:
        value = self.data[self.keys_by_snake[key]]
        if key == "placement" and self.region_of_placement:
            placement = dict(SnakeView(value))
            placement["region"] = placement.get("availability_zone", "")[:-1]
            return placement
        return _snake_value(value)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys_by_snake)

    def __len__(self) -> int:
        return len(self.keys_by_snake)


def _snake_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return SnakeView(value)
    if isinstance(value, list):
        return [_snake_value(item) for item in value]
    return value
