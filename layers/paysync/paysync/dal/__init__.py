"""Data access: the only code that talks SQL or boto3."""
