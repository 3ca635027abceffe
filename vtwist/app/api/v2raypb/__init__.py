"""Python modules generated from V2Ray 4.34's ``.proto`` files (``sh tools/gen_protos.sh``,
grpcio-tools' protoc; do not edit). ``app/stats/command/command.proto`` is
``app_stats_command_command_pb2``; message names keep V2Ray's packages."""
