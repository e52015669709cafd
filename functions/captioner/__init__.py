"""Captioner: caption images uploaded to S3 and record the result in DynamoDB and object tags."""

__version__ = "0.1.0"
