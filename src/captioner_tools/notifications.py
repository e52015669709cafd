"""Turning on a bucket's EventBridge notifications without dropping the rest of its
notification configuration (``captioner connect``, and the local stack's stand-in buckets).

PutBucketNotificationConfiguration replaces the bucket's whole configuration, so this reads
it, adds ``EventBridgeConfiguration: {}`` and writes everything else back as it was: the
queue, topic and Lambda configurations with their ids, events and filters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The template parameter that lists the buckets whose EventBridge events the stack captions.
EXISTING_BUCKETS_PARAMETER = "ExistingBucketNames"
EVENTBRIDGE = "EventBridgeConfiguration"
# The destinations a configuration can name, and the ARN field of each.
DESTINATIONS = {
    "QueueConfigurations": ("queue", "QueueArn"),
    "TopicConfigurations": ("topic", "TopicArn"),
    "LambdaFunctionConfigurations": ("Lambda function", "LambdaFunctionArn"),
}
# What PutBucketNotificationConfiguration takes; anything else in the GET response
# (ResponseMetadata) is not part of the configuration.
CONFIGURATION_KEYS = (*DESTINATIONS, EVENTBRIDGE)


@dataclass(frozen=True)
class EventBridgeChange:
    """A bucket's notification configuration before, and with EventBridge turned on."""

    bucket: str
    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def needed(self) -> bool:
        """False when EventBridge notifications are already on: nothing to write."""
        return EVENTBRIDGE not in self.before

    def kept(self) -> list[str]:
        """One line per destination the configuration already had (all of them stay)."""
        return [
            describe_destination(kind, config)
            for kind in DESTINATIONS
            for config in self.before.get(kind, [])
        ]


def read_configuration(s3: Any, bucket: str) -> dict[str, Any]:
    """The bucket's notification configuration, as PutBucketNotificationConfiguration takes
    it (empty lists left out)."""
    response = s3.get_bucket_notification_configuration(Bucket=bucket)
    return {k: response[k] for k in CONFIGURATION_KEYS if k in response and response[k] != []}


def plan_eventbridge(s3: Any, bucket: str) -> EventBridgeChange:
    """Read the configuration and work out the one with EventBridge on (nothing written)."""
    before = read_configuration(s3, bucket)
    return EventBridgeChange(bucket, before, {**before, EVENTBRIDGE: {}})


def write_configuration(s3: Any, change: EventBridgeChange) -> None:
    """Write ``change.after``.

    S3 validates the destinations of a configuration it is given (a test message to each
    queue and topic, a permission check for each function) unless told to skip that. We
    skip it: the only thing added is EventBridge, which has no destination to validate, and
    the destinations we write back unchanged are someone else's, validated when their owner
    configured them. Validating them again would fail this write for a problem that is not
    ours (a queue deleted since, a policy changed) and could send their consumers test
    messages they did not ask for.
    """
    s3.put_bucket_notification_configuration(
        Bucket=change.bucket,
        NotificationConfiguration=change.after,
        SkipDestinationValidation=True,
    )


def enable_eventbridge(s3: Any, bucket: str, *, dry_run: bool = False) -> EventBridgeChange:
    """Turn on the bucket's EventBridge notifications, keeping everything else (read, merge,
    write). Writes nothing when they are already on, or with ``dry_run``."""
    change = plan_eventbridge(s3, bucket)
    if change.needed and not dry_run:
        write_configuration(s3, change)
    return change


def describe_destination(kind: str, config: dict[str, Any]) -> str:
    """``queue thumbs → arn:aws:sqs:…:thumbs on s3:ObjectCreated:* (prefix thumbs/)``."""
    what, arn_field = DESTINATIONS[kind]
    name = f" {config['Id']}" if config.get("Id") else ""
    events = ", ".join(config.get("Events", []))
    rules = config.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    filters = ", ".join(f"{r.get('Name', '').lower()} {r.get('Value', '')}" for r in rules)
    return f"{what}{name} → {config.get(arn_field, '?')} on {events}" + (
        f" ({filters})" if filters else ""
    )
