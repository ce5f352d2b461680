"""The lab's Auto Scaling groups launch as EC2 Auto Scaling does where moto 5.2.5's do not.

Installed into the lab's EC2 API process (`gpufleet.lab.ec2`) before it serves:

- a mixed instances policy's spot share is launched as spot instances (InstanceLifecycle
  `spot`), its base and on-demand share on demand; moto launches every instance on demand;
- instances are spread over the group's subnets, fewest first; moto puts all in the first;
- an update's mixed instances policy keeps what it omits, as EC2's does; moto replaces the
  policy with what the update names;
- an instance launched from a launch template has the template's metadata options (IMDSv2,
  tags in the instance metadata); moto gives it its defaults;
- a group is sized to its desired capacity, whatever the split's rounding (moto's rounding
  can leave a mixed group short), and one below it tries again every RETRY_SECONDS, as
  EC2's does; moto launches only when a call changes the group;
- while the lab refuses spot (`gpufleet lab spot refuse`: SPOT_REFUSED in the EC2 state
  dir), a spot launch fails as EC2's does for want of capacity, and the group stays short
  of its spot share until spot is allowed again. The failure is printed to the API's log
  (moto keeps no scaling activities).

The split is the collection's own (module_utils/spot_fallback.py), which the LB membership
service's spot fallback reads the groups by.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

from gpufleet.lab import collection_module_util

SPOT_REFUSED = "spot-refused"
RETRY_SECONDS = 2.0
SPOT_CAPACITY_ERROR = (
    "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot "
    "capacity available that matches your request. Launching EC2 instance failed."
)
spot_fallback = collection_module_util("spot_fallback")


def spot_refused(ec2_dir: Path) -> bool:
    return (ec2_dir / SPOT_REFUSED).exists()


def refuse_spot(ec2_dir: Path, refused: bool) -> None:
    marker = ec2_dir / SPOT_REFUSED
    if refused:
        marker.touch()
    else:
        marker.unlink(missing_ok=True)


def _distribution(group: Any) -> tuple[int, int]:
    """The group's on-demand base and spot share; (desired, 0) without a mixed policy."""
    policy = group.mixed_instances_policy or {}
    if not policy:
        return group.desired_capacity or 0, 0
    return spot_fallback.base_and_spot_share(policy)


def _subnet_for(group: Any) -> str | None:
    """The group's subnet with the fewest of its instances."""
    subnets = [s for s in (group.vpc_zone_identifier or "").split(",") if s]
    if not subnets:
        return None
    used = [state.instance.subnet_id for state in group.instance_states]
    return min(subnets, key=lambda s: (used.count(s), subnets.index(s)))


def _launch(group: Any, count: int, tags: dict[str, str], ec2_dir: Path) -> None:
    """Launch `count` instances in the group: on demand up to the distribution's on-demand
    count, spot for the rest unless the lab refuses spot."""
    base, share = _distribution(group)
    desired = group.desired_capacity or 0
    on_demand_wanted = spot_fallback.on_demand_count(desired, base, share)
    on_demand = sum(1 for s in group.instance_states if s.instance.lifecycle != "spot")
    lifecycles = ["on-demand"] * min(count, max(0, on_demand_wanted - on_demand))
    spot = count - len(lifecycles)
    if spot and spot_refused(ec2_dir):
        print(f"{group.name}: {spot} spot instance(s): {SPOT_CAPACITY_ERROR}", flush=True)
    else:
        lifecycles += ["spot"] * spot
    backend = group.autoscaling_backend.ec2_backend
    template, metadata_options = None, {}
    if group.ec2_launch_template is not None:
        template = {"LaunchTemplateId": group.ec2_launch_template.id}
        # EC2 launches with the template's metadata options (IMDSv2, tags in the metadata).
        version = group.ec2_launch_template.get_version(group.launch_template_version)
        metadata_options = version.data.get("MetadataOptions")
    for lifecycle in lifecycles:
        subnet = _subnet_for(group)
        market = {"MarketType": "spot"} if lifecycle == "spot" else None
        reservation = backend.run_instances(
            group.image_id,
            1,
            group.user_data,
            group.security_groups,
            instance_type=group.instance_type,
            tags={"instance": {**tags, "aws:autoscaling:groupName": group.name}},
            placement=backend.get_subnet(subnet).availability_zone if subnet else None,
            launch_template=template,
            is_instance_type_default=False,
            subnet_id=subnet,
            instance_market_options=market,
            metadata_options=metadata_options or {},
        )
        _join(group, reservation.instances)


def _join(group: Any, instances: list[Any]) -> None:
    from moto.autoscaling.models import InstanceState

    for instance in instances:
        instance.autoscaling_group = group
        group.instance_states.append(
            InstanceState(
                instance, protected_from_scale_in=group.new_instances_protected_from_scale_in
            )
        )


def install(ec2_dir: Path) -> None:
    """Make moto's groups launch as EC2's, and keep launching for those below desired."""
    from moto.autoscaling import models

    def set_desired_capacity(group: Any, new_capacity: int | None) -> None:
        group.desired_capacity = group.min_size if new_capacity is None else new_capacity
        extra = len(group.active_instances()) - group.desired_capacity
        if extra < 0:
            _launch(group, -extra, {**group.get_propagated_tags(), **group.instance_tags}, ec2_dir)
        elif extra > 0:
            _scale_in(group, extra)

    update = models.FakeAutoScalingGroup.update

    def update_keeping_what_is_omitted(group: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["mixed_instances_policy"] = _merged(
            group.mixed_instances_policy, kwargs.get("mixed_instances_policy")
        )
        update(group, *args, **kwargs)

    # moto sizes a mixed group by its own rounding of the split, which can leave it short.
    models.FakeAutoScalingGroup.set_desired_capacity = set_desired_capacity
    models.FakeAutoScalingGroup.update = update_keeping_what_is_omitted
    threading.Thread(target=_keep_trying, args=(models,), daemon=True).start()


def _merged(current: dict[str, Any] | None, given: dict[str, Any] | None) -> dict | None:
    """An update's mixed instances policy as EC2 applies it: what it omits is kept (moto
    replaces the policy with what the update names, and refuses one without a template)."""
    if not current or not given:
        return given or current
    merged = copy.deepcopy({**current, **given})
    merged["InstancesDistribution"] = {
        **current.get("InstancesDistribution", {}),
        **given.get("InstancesDistribution", {}),
    }
    # moto keeps the template by id and name, and takes it back by one of them only.
    spec = merged["LaunchTemplate"]["LaunchTemplateSpecification"]
    if "LaunchTemplate" not in given and spec.get("LaunchTemplateName"):
        spec.pop("LaunchTemplateId", None)
    return merged


def _scale_in(group: Any, count: int) -> None:
    """Terminate `count` instances not protected from scale-in, oldest first, as moto does."""
    leaving = [s for s in group.instance_states if not s.protected_from_scale_in][:count]
    group.autoscaling_backend.ec2_backend.terminate_instances([s.instance.id for s in leaving])
    group.instance_states = [s for s in group.instance_states if s not in leaving]


def _keep_trying(models: Any) -> None:
    while True:
        time.sleep(RETRY_SECONDS)
        for backend in _backends(models):
            for group in list(backend.autoscaling_groups.values()):
                if len(group.active_instances()) < (group.desired_capacity or 0):
                    group.set_desired_capacity(group.desired_capacity)


def _backends(models: Any) -> list[Any]:
    return [
        backend for regions in models.autoscaling_backends.values() for backend in regions.values()
    ]
