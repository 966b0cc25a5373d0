"""A bare PipelineService whose GetPipeline answers a constant, on the common server settings (interceptors, auth,
options, health): the baseline of the gRPC-overhead and footprint rows.

    python -m benchmarks.echo_server serve   # reads PIPELINES_GRPC_PORT etc. like the real service
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc
from contentpipe.common.server import ServiceRegistration, run_server
from contentpipe.common.settings import load_common_settings

_PIPELINE = pb.Pipeline(name="pipelines/echo", display_name="echo")


class EchoPipelines(pb_grpc.PipelineServiceServicer):
    async def GetPipeline(self, request: pb.GetPipelineRequest, context: Any) -> pb.GetPipelineResponse:
        return pb.GetPipelineResponse(pipeline=_PIPELINE)


def main() -> int:
    settings = load_common_settings("pipelines", os.environ)
    registration = ServiceRegistration(
        pb.DESCRIPTOR.services_by_name["PipelineService"].full_name,
        pb_grpc.add_PipelineServiceServicer_to_server,
        EchoPipelines(),  # type: ignore[abstract]
    )
    return asyncio.run(run_server(settings, [registration]))


if __name__ == "__main__":
    sys.exit(main())
