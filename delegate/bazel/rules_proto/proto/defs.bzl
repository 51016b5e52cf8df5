# Offline stand-in: forwards to the rules built into Bazel (Debian bazel-bootstrap 4.2.3).

def proto_lang_toolchain(**attrs):
    native.proto_lang_toolchain(**attrs)

def proto_library(**attrs):
    native.proto_library(**attrs)
