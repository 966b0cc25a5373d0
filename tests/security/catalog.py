"""Every RPC of every service, read from the generated descriptors (so new RPCs join the suites by themselves)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from contentpipe.api.generation.v1 import generation_service_pb2
from contentpipe.api.oauth.v1 import connection_service_pb2, posting_service_pb2
from contentpipe.api.pipelines.v1 import pipeline_service_pb2
from contentpipe.api.scheduler.v1 import notification_service_pb2, scheduler_service_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

# Which process serves which proto file (one process may serve several gRPC services).
PROTO_MODULES: dict[str, Sequence[Any]] = {
    "generation": (generation_service_pb2,),
    "oauth": (connection_service_pb2, posting_service_pb2),
    "pipelines": (pipeline_service_pb2,),
    "scheduler": (scheduler_service_pb2, notification_service_pb2),
}
SERVICE_PROCESSES = tuple(PROTO_MODULES)


@dataclass(frozen=True)
class Rpc:
    """One unary RPC: the process that serves it and its descriptors."""

    process: str
    service: ServiceDescriptor
    method: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.service.full_name}/{self.method.name}"

    @property
    def id(self) -> str:
        return f"{self.service.name}.{self.method.name}"

    @property
    def input(self) -> Descriptor:
        return self.method.input_type

    @property
    def output(self) -> Descriptor:
        return self.method.output_type

    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.input_type)

    def response_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.output_type)

    def callable(self, channel: grpc.Channel, *, raw: bool = False) -> Callable[..., Any]:
        """A unary-unary callable on `channel`; `raw=True` sends bytes as they are (for malformed wire data)."""
        response_class = self.response_class()
        return channel.unary_unary(
            self.path,
            request_serializer=None if raw else (lambda message: message.SerializeToString()),
            response_deserializer=response_class.FromString,
        )


def all_rpcs() -> list[Rpc]:
    rpcs: list[Rpc] = []
    for process, modules in PROTO_MODULES.items():
        for module in modules:
            for service in module.DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    if method.client_streaming or method.server_streaming:
                        continue
                    rpcs.append(Rpc(process, service, method))
    return rpcs


def first_rpc_per_service() -> list[Rpc]:
    seen: dict[str, Rpc] = {}
    for rpc in all_rpcs():
        seen.setdefault(rpc.service.full_name, rpc)
    return list(seen.values())
