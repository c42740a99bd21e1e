"""Writes the JSON schemas of KEDA's ScaledObject and TriggerAuthentication
(keda.sh/v1alpha1) that scripts/test-deploy.sh checks the rendered manifests
against, offline.

The schemas come from KEDA's CRDs as the PyPI package cloudcoil-models-keda
(2.16.1.0, KEDA 2.16) carries them, as pydantic models. Objects are made
closed (no property that the CRD does not declare), as `kubectl apply
--validate=strict` would refuse an unknown field.

    python3 -m venv /tmp/keda && /tmp/keda/bin/pip install cloudcoil-models-keda==2.16.1.0
    /tmp/keda/bin/python k8s/schemas/generate.py
"""

import json
import pathlib

from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication

HERE = pathlib.Path(__file__).parent


def close(node):
    """Every object with declared properties refuses others."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            close(value)
    elif isinstance(node, list):
        for value in node:
            close(value)


for model, kind in ((ScaledObject, "ScaledObject"), (TriggerAuthentication, "TriggerAuthentication")):
    schema = model.model_json_schema(by_alias=True)
    close(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"keda.sh/v1alpha1 {kind} (KEDA 2.16, from cloudcoil-models-keda 2.16.1.0)"
    schema["properties"]["apiVersion"] = {"const": "keda.sh/v1alpha1"}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    out = HERE / f"keda-{kind.lower()}-v1alpha1.json"
    out.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    print(out)
