"""The CLI's job done with requests-oauth2client: token (client_credentials + DPoP), then one GET.

Timed by bench.py as a whole process, like `python dpop.py ... GET URL`.
usage: roc_job.py TOKEN_ENDPOINT API_URL  (client id/secret/scope from the environment)
"""

import os
import sys

import requests
from requests_oauth2client import OAuth2Client, OAuth2ClientCredentialsAuth

token_endpoint, api = sys.argv[1], sys.argv[2]
client = OAuth2Client(
    token_endpoint=token_endpoint,
    client_id=os.environ["DPOP_CLIENT_ID"],
    client_secret=os.environ["DPOP_CLIENT_SECRET"],
    dpop_bound_access_tokens=True,
    testing=True,  # allows http:// to the loopback demo servers
)
auth = OAuth2ClientCredentialsAuth(client, scope=os.environ["DPOP_SCOPE"], dpop=True)
response = requests.get(api, auth=auth, timeout=30)
sys.stdout.buffer.write(response.content)
sys.exit(0 if response.ok else 4)
