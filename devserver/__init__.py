"""`make run`: the whole paysync stack on this machine, without AWS and without Docker.

An embedded PostgreSQL (unless DATABASE_URL is set), a moto S3 server with the snapshot
bucket, and an HTTP server that plays API Gateway for the routes in template.yaml; objects
put into the bucket reach the reconcile function as S3 events. See docs/local.md.
"""
