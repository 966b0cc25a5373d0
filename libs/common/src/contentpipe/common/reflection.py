"""Server reflection that serves contentpipe's protos with their comments, so `grpcurl describe` shows the docs.

The generated `_pb2` modules embed descriptors without source info; `make gen` also writes
`contentpipe/api/descriptor_set.binpb` (built with `--include_source_info`), and this servicer answers from it for
our own files and falls back to the runtime descriptors for everything else (well-known types, health, reflection).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer


@cache
def documented_files() -> Mapping[str, bytes]:
    """Serialized FileDescriptorProtos with comments, by file name (empty when the set is not packaged)."""
    try:
        raw = resources.files("contentpipe.api").joinpath("descriptor_set.binpb").read_bytes()
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    fds = descriptor_pb2.FileDescriptorSet.FromString(raw)
    return {f.name: f.SerializeToString() for f in fds.file}


class DocumentedReflectionServicer(ReflectionServicer):  # type: ignore[misc]
    """The stock asyncio reflection servicer, answering file requests with the documented descriptors."""

    def __init__(self, service_names: Iterable[str], documented: Mapping[str, bytes]) -> None:
        super().__init__(service_names)
        self._documented = documented

    def _file_response(self, descriptor: FileDescriptor, request: Any) -> reflection_pb2.ServerReflectionResponse:
        files: dict[str, FileDescriptor] = {}
        pending = [descriptor]
        while pending:
            current = pending.pop()
            if current.name in files:
                continue
            files[current.name] = current
            pending.extend(current.dependencies)
        serialized = []
        for name, file in files.items():
            if name in self._documented:
                serialized.append(self._documented[name])
            else:
                proto = descriptor_pb2.FileDescriptorProto()
                file.CopyToProto(proto)
                serialized.append(proto.SerializeToString())
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(file_descriptor_proto=serialized),
            original_request=request,
        )

    def _file_by_filename(self, request: Any, filename: str) -> reflection_pb2.ServerReflectionResponse:
        try:
            descriptor = self._pool.FindFileByName(filename)
        except KeyError:
            return self._not_found(request)
        return self._file_response(descriptor, request)

    def _file_containing_symbol(self, request: Any, symbol: str) -> reflection_pb2.ServerReflectionResponse:
        try:
            descriptor = self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            return self._not_found(request)
        return self._file_response(descriptor, request)

    @staticmethod
    def _not_found(request: Any) -> reflection_pb2.ServerReflectionResponse:
        return reflection_pb2.ServerReflectionResponse(
            error_response=reflection_pb2.ErrorResponse(
                error_code=grpc.StatusCode.NOT_FOUND.value[0], error_message=b"not found"
            ),
            original_request=request,
        )


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Registers reflection for `service_names` (plus reflection itself) on `server`."""
    names = [*service_names, reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        DocumentedReflectionServicer(names, documented_files()), server
    )
