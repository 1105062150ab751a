"""Loads the Python protobuf modules generated at build time (protoc --python_out) from
MCPHUB_PYGEN. grpc's health module is loaded by path: a generated `grpc/` package on the
import path would hide the grpc library itself."""

import importlib.util
import os
import sys

PYGEN = os.environ.get("MCPHUB_PYGEN", "")
sys.path.insert(0, PYGEN)

from mcphub.v1 import admin_pb2, gateway_pb2  # noqa: E402


def _load(name, rel):
    spec = importlib.util.spec_from_file_location(name, os.path.join(PYGEN, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


health_pb2 = _load("mcphub_health_pb2", "grpc/health/v1/health_pb2.py")
reflection_pb2 = _load("mcphub_reflection_pb2", "grpc/reflection/v1alpha/reflection_pb2.py")
reflection_v1_pb2 = _load("mcphub_reflection_v1_pb2", "grpc/reflection/v1/reflection_pb2.py")

__all__ = ["admin_pb2", "gateway_pb2", "health_pb2", "reflection_pb2", "reflection_v1_pb2"]
