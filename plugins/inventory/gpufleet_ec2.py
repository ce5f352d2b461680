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
  - Credentials, endpoints, assumed roles, regions and the cache are amazon.aws's
    (its C(plugin_utils) inventory base, as M(amazon.aws.aws_ec2) uses), and compose,
    groups and keyed_groups are Ansible's constructed options, so their options and
    meaning are those plugins'.
author: gpufleet maintainers (!UNKNOWN)
version_added: "0.1.0"
requirements:
  - boto3
  - botocore
extends_documentation_fragment:
  - constructed
  - inventory_cache
  - amazon.aws.boto3
  - amazon.aws.common.plugins
  - amazon.aws.assume_role.plugins
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
  assume_role_external_id:
    description:
      - External id to pass when assuming O(assume_role_arn), as the role's trust policy
        may require.
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

import datetime
import functools
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.module_utils.common.dict_transformations import (
    _camel_to_snake,
    camel_dict_to_snake_dict,
)
from ansible.plugins.inventory import get_cache_plugin
from ansible_collections.amazon.aws.plugins.plugin_utils.inventory import AWSInventoryBase
from ansible_collections.gpufleet.fleet.plugins.module_utils.ec2_gpus import gpu_profile

try:
    import boto3
    import botocore.config
    import botocore.exceptions
    from botocore.parsers import ResponseParserError
except ImportError:
    pass  # amazon.aws's SDK check names what is missing when the plugin is used

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
JINJA_LITERALS = {"true", "false", "none", "True", "False", "None"}
NO_CREDENTIALS = (
    "no AWS credentials: set profile, or access_key and secret_key, "
    "or the AWS_* environment variables"
)


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


def _plain_path(expression: str) -> list[str | int] | None:
    """The parts of a plain variable path (a.b, a['b'], a[0]); None for any other expression."""
    match = SIMPLE_PATH.match(expression)
    if match is None or match.group(1) in JINJA_LITERALS:
        return None
    parts: list[str | int] = [match.group(1)]
    for attribute, single, double, index in PATH_PART.findall(match.group(2)):
        parts.append(int(index) if index else attribute or single or double)
    return parts


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


class InventoryModule(AWSInventoryBase):
    """amazon.aws's inventory base (sessions, assumed role, regions, cache, errors) and
    Ansible's constructed options, with the fleet's parts: the GPU table, the fleet groups,
    AMI drift and the fleet's host variables."""

    NAME = "gpufleet.fleet.gpufleet_ec2"
    INVENTORY_FILE_SUFFIXES = ("gpufleet_ec2.yml", "gpufleet_ec2.yaml")

    class TemplatedOptions(AWSInventoryBase.TemplatedOptions):
        """amazon.aws's templated options, without the disable_lookups argument that
        ansible-core 2.19 deprecates and warns about on every run (amazon.aws issue 2786,
        fixed after the 10.1.2 that Ansible 12 ships)."""

        def get(self, *args: Any) -> Any:
            value = self.original_options.get(*args)
            if not value or not self.templar or args[0] not in self.TEMPLATABLE_OPTIONS:
                return value
            if isinstance(value, dict):
                return {k: self.templar.template(v) for k, v in value.items()}
            if isinstance(value, list):
                return [self.templar.template(v) for v in value]
            return self.templar.template(value)

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache=cache)
        hit, processed = self.get_cached_result(path, cache)
        if not hit:
            processed = self._build(self._query())
            if self.get_option("cache"):
                # One string, not a tree: the cache plugin then decodes it in one step.
                # cache=False marks it fresh, so it replaces an entry that could not be read.
                self.update_cached_result(path, False, json.dumps(processed))
        self._populate(processed)

    def _do_fail(self, message: str) -> NoReturn:
        raise FleetError(message)

    # -- the source file ----------------------------------------------------------------------

    def set_options(
        self, task_keys: Any = None, var_options: Any = None, direct: Any = None
    ) -> None:
        """Every option is checked before any is used, and before AWS is called: Ansible
        ignores unknown keys and coerces types loosely, and an operator's typo should fail,
        naming the option."""
        self._refuse_unknown_options(direct or {})
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        self._check_hostnames(self.get_option("hostnames"))
        for region in self.get_option("regions"):
            if not isinstance(region, str) or not REGION_NAME.match(region):
                raise FleetError(f"regions: {region!r} is not an AWS region name")
        profile = self.get_option("profile")
        if profile and profile not in boto3.session.Session().available_profiles:
            raise FleetError(f"profile {profile!r} is not in the AWS config files")

    def _read_config_data(self, path: str) -> dict[str, Any]:
        """As Ansible's, except that a cache plugin that cannot start (a cache directory that
        cannot be made or written) is warned about and left out: EC2 may well be reachable."""
        try:
            return super()._read_config_data(path)
        except AnsibleParserError:
            raise
        except AnsibleError as exc:
            # Only the cache plugin fails once the options are set.
            if not self._options.get("cache"):
                raise
            self.display.warning(
                f"gpufleet_ec2: the inventory cache is left out, as it cannot be used "
                f"({_first_line(exc)}); EC2 is queried on every run until that is fixed"
            )
            self._cache = get_cache_plugin("ansible.builtin.memory")
            return {}

    def _refuse_unknown_options(self, config: Mapping[str, Any]) -> None:
        from ansible import constants as C

        definitions = C.config.get_configuration_definitions("inventory", self._load_name)
        by_name = {}
        for name, definition in definitions.items():
            for alias in [name, *definition.get("aliases", [])]:
                by_name[alias] = definition
        for key, value in config.items():
            definition = by_name.get(key)
            if definition is None:
                raise FleetError(f"unknown option {key!r}")
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

    # -- the cache ----------------------------------------------------------------------------

    def get_cached_result(self, path: str, cache: bool) -> tuple[bool, Any]:
        """amazon.aws's cache lookup, read with care: an entry that cannot be read or is not
        an inventory this plugin wrote is warned about, and EC2 is queried instead."""
        try:
            hit, text = super().get_cached_result(path, cache)
        except Exception as exc:  # the cache plugin's own errors are of any kind
            self.display.warning(
                f"gpufleet_ec2: the inventory cache cannot be read ({_first_line(exc)}); "
                "querying EC2 instead"
            )
            return False, None
        if not hit:
            return False, None
        try:
            processed = json.loads(text)
        except (TypeError, ValueError):
            processed = None
        if not _is_processed_inventory(processed):
            self.display.warning(
                f"gpufleet_ec2: the inventory cache entry {self.get_cache_key(path)} is not an "
                "inventory this plugin wrote; querying EC2 and replacing it"
            )
            return False, None
        return True, processed

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

    # -- talking to EC2 -----------------------------------------------------------------------

    def _set_frozen_credentials(self) -> None:
        """amazon.aws's assumed role, whose credentials every client then uses, with the
        external id amazon.aws's plugins cannot pass."""
        role = self.get_option("assume_role_arn")
        if not role:
            return
        request = {"RoleArn": role, "RoleSessionName": "gpufleet-inventory"}
        if self.get_option("assume_role_external_id"):
            request["ExternalId"] = self.get_option("assume_role_external_id")
        home = (self.get_option("regions") or ["us-east-1"])[0]
        sts = self.client("sts", region=home, config=self._botocore_config())
        try:
            credentials = sts.assume_role(**request)["Credentials"]
        except botocore.exceptions.ClientError as exc:
            raise FleetError(f"assume_role_arn {role}: {exc}") from None
        except botocore.exceptions.NoCredentialsError:
            raise FleetError(NO_CREDENTIALS) from None
        self._frozen_credentials = {
            "profile_name": None,
            "aws_access_key_id": credentials["AccessKeyId"],
            "aws_secret_access_key": credentials["SecretAccessKey"],
            "aws_session_token": credentials["SessionToken"],
        }

    def _botocore_config(self) -> Any:
        return botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": self.get_option("max_attempts")},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=10,
        )

    def _call(self, region: str, method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except botocore.exceptions.NoCredentialsError:
            raise FleetError(NO_CREDENTIALS) from None
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
        """Instances of every region, each with its region and its AMI, in one list; the
        regions are queried concurrently."""
        # Plain str: values from the source file are trusted templates; host data is not.
        regions = [str(region) for region in dict.fromkeys(self._boto3_regions("ec2"))]
        config = self._botocore_config()
        include_sets, exclude_sets = self._filter_sets()
        with ThreadPoolExecutor(max_workers=min(16, len(regions)) or 1) as pool:
            # A region's query starts as soon as its client is made: amazon.aws makes a boto3
            # session per client, which loads botocore's model again (0.15 s), so the next
            # client is made while the regions before it are already asked.
            queries = [
                pool.submit(
                    self._query_region,
                    region,
                    self.client("ec2", region=region, config=config),
                    include_sets,
                    exclude_sets,
                )
                for region in regions
            ]
            results = [query.result() for query in queries]
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
        """The processed inventory, ready to cache: Constructable's methods write into a
        ProcessedInventory through the calls they make on Ansible's."""
        strict = self.get_option("strict")
        address = HOSTNAME_SOURCES[self.get_option("host_address")]
        fleet_groups = self.get_option("fleet_groups")
        compose = self.get_option("compose")
        groups = self.get_option("groups")
        keyed_groups = self.get_option("keyed_groups")
        processed = ProcessedInventory()
        ansible_inventory, self.inventory = self.inventory, processed
        try:
            for name, instance in self._named(instances, strict).items():
                hostvars = processed.add_host_with_variables(name, _hostvars(instance, address))
                if fleet_groups:
                    for group in self._fleet_groups(instance, hostvars):
                        processed.add_host(name, processed.add_group(group))
                # The host's variables so far, composed ones included, over the instance.
                context = HostContext(instance, hostvars)
                self._set_composite_vars(compose, context, name, strict=strict)
                if groups:  # conditionals are Jinja's, which takes a dict
                    self._add_host_to_composed_groups(
                        groups, context.as_variables(), name, strict=strict, fetch_hostvars=False
                    )
                self._add_host_to_keyed_groups(
                    keyed_groups, context, name, strict=strict, fetch_hostvars=False
                )
        except FleetError:
            raise
        except AnsibleError as exc:  # Constructable's, under strict: one line, like ours
            raise FleetError(exc.message) from None
        finally:
            self.inventory = ansible_inventory
        return processed.as_dict()

    def _compose(self, template: Any, variables: Any, disable_lookups: Any = ...) -> Any:
        """Constructable's, except that a plain variable path (a.b, a['b']) the host has is
        read directly (templating each expression for each host is most of a large
        inventory's cost), and a value that is no expression (a number) is taken as it is."""
        if not isinstance(template, str):
            return template
        path = _plain_path(template)
        if path is None or path[0] not in variables:
            if isinstance(variables, HostContext):
                variables = variables.as_variables()
            return super()._compose(template, variables)
        value = variables[path[0]]
        for part in path[1:]:
            value = value[part]
        return value

    @staticmethod
    def _sanitize_group_name(name: str) -> str:
        return safe_group_name(name)

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
                name = _hostname_from(preference["name"], instance, tags)
                prefix = (
                    _hostname_from(preference["prefix"], instance, tags)
                    if "prefix" in preference
                    else None
                )
                if name and prefix:
                    name = prefix + preference.get("separator", "_") + name
            else:
                name = _hostname_from(preference, instance, tags)
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


def _hostname_from(preference: str, instance: dict[str, Any], tags: dict[str, str]) -> str | None:
    if preference.startswith("tag:"):
        return _tag_hostname(preference, tags)
    value = _attribute_chain(instance, HOSTNAME_SOURCES[preference])
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value) if value else None


def _hostvars(instance: dict[str, Any], address: tuple[str, ...]) -> dict[str, Any]:
    tags = tag_dict(instance)
    image = instance["_image"]
    instance_type = instance.get("InstanceType", "")
    gpus, gpu_model, gpu_memory = gpu_profile(instance_type)
    return {
        "ansible_host": _attribute_chain(instance, address),
        "ec2_instance_id": instance["InstanceId"],
        "ec2_private_ip": instance.get("PrivateIpAddress", ""),
        "ec2_region": instance["_region"],
        "ec2_availability_zone": instance.get("Placement", {}).get("AvailabilityZone", ""),
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


class ProcessedInventory:
    """What a build adds to the inventory, kept as plain data the cache can hold: the calls
    Constructable's methods make on Ansible's inventory (add_group, add_host, add_child,
    set_variable), recorded. Values become JSON's types here, so a warm cache gives what a
    cold run gives."""

    def __init__(self) -> None:
        self.hosts: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, None]] = {}
        self.children: dict[str, dict[str, None]] = {}

    def add_host_with_variables(self, host: str, variables: dict[str, Any]) -> dict[str, Any]:
        """A new host with variables already of JSON's types; returns its variables."""
        self.hosts[host] = variables
        return variables

    def add_group(self, group: str) -> str:
        self.groups.setdefault(group, {})
        return group

    def add_host(self, host: str, group: str | None = None, port: int | None = None) -> str:
        self.hosts.setdefault(host, {})
        if group:
            self.groups.setdefault(group, {})[host] = None
        return host

    def add_child(self, group: str, child: str) -> None:
        """As Ansible's: a child that is a group becomes a subgroup, else a member host."""
        if child in self.groups:
            self.children.setdefault(group, {})[child] = None
        else:
            self.add_host(child, group)

    def set_variable(self, host: str, name: str, value: Any) -> None:
        self.hosts[host][name] = _json_value(value)

    def as_dict(self) -> dict[str, Any]:
        return {
            "hosts": self.hosts,
            "groups": {group: list(members) for group, members in self.groups.items()},
            "children": {group: list(kids) for group, kids in self.children.items()},
        }


def _json_value(value: Any) -> Any:
    """A composed value as JSON holds it: mappings as dicts, sequences as lists, times in
    ISO 8601 (as EC2's API writes them)."""
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


class HostContext(Mapping):
    """What compose, groups and keyed_groups see of one host, as amazon.aws.aws_ec2 shows it.

    The instance in snake_case (placement.availability_zone, private_ip_address, ...),
    its tags as `tags`, and the host's variables: gpufleet's own and those composed so far
    (hostvars is the dict they are set in). Plain paths read the instance through
    SnakeView; only Jinja gets a converted copy.
    """

    def __init__(self, instance: dict[str, Any], hostvars: dict[str, Any]) -> None:
        self.instance = instance
        self.hostvars = hostvars
        self.view = SnakeView(instance, region_of_placement=True)
        self._converted: dict[str, Any] | None = None

    def __getitem__(self, key: str) -> Any:
        if key in self.hostvars:
            return self.hostvars[key]
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
        return {**self._converted, **self.hostvars}


@functools.lru_cache(maxsize=4096)
def safe_group_name(name: str) -> str:
    """A group name Ansible accepts, whatever the setting: names repeat across hosts."""
    from ansible.inventory.group import to_safe_group_name

    return to_safe_group_name(name, force=True, silent=True)


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
