"""`python -m lwd.gateway [options]` = `lwd gateway serve [options]`, without building the
whole `lwd` command tree: `GatewayProcess` starts gateways this way."""

import sys

import tyro

from lwd.gateway.config import GatewayConfig
from lwd.gateway.server import serve

if __name__ == "__main__":
    serve(tyro.cli(GatewayConfig, prog="python -m lwd.gateway", description=__doc__))
    sys.exit(0)
