"""A small test CRD, Gadget, with a status subresource, printer columns and CEL rules."""

GROUP, VERSION, PLURAL, KIND = "example.torchproof.dev", "v1", "gadgets", "Gadget"
GADGETS = f"{GROUP}/{VERSION}/{PLURAL}"

GADGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "gadget", "kind": KIND, "shortNames": ["gdg"],
                  "categories": ["toys"]},
        "versions": [{
            "name": VERSION, "served": True, "storage": True,
            "subresources": {"status": {}},
            "additionalPrinterColumns": [
                {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            ],
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "x-kubernetes-validations": [
                    {"rule": "self.metadata.name.size() <= 20", "message": "name too long"}],
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["size"],
                        "x-kubernetes-validations": [
                            {"rule": "!has(self.low) || !has(self.high) || self.low <= self.high",
                             "message": "low must not exceed high"}],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1, "maximum": 10},
                            "colour": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                            "code": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                            "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                            "low": {"type": "integer"},
                            "high": {"type": "integer"},
                            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    },
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            }},
        }],
    },
}
