"""Where the local stack runs, and the fixed values moto is given."""

from __future__ import annotations

HOST = "127.0.0.1"
DEFAULT_PORT = 4566
DEFAULT_RETRY_DELAY_S = 10  # how long a failed message stays invisible (AWS: 360 s)
DEFAULT_SCHEDULE_INTERVAL_S = 10.0  # scheduled rules (the budget sweep; AWS: 5 minutes)
DEFAULT_STACK_NAME = "captioner"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
# moto accepts any credentials; these keep boto3 from looking for real ones.
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
