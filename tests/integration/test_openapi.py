"""docs/openapi.yaml against the API the binary serves (and the route table in the source).

The routes are compared with `postvault api routes` exactly, in both directions: a route the
server serves but the document does not describe fails, and so does a documented route the
server does not serve. Every operation must have responses, an `x-roles` list drawn from the
four roles, bearer security (except GET /api/v1/health and the Web Key Directory under
/.well-known/openpgpkey, the routes without a token), and a
path parameter for every {param} of its path. Where audit-api/routes.cpp is at hand, the roles,
the accepted query parameters (check_params) and body fields (check_fields, `.at()` = required)
of each route are compared with the document as well.

Needs PyYAML (Debian: python3-yaml) for /usr/bin/python3.
"""

import os
import re
import subprocess
import unittest

from harness import BINARY, SOURCE_DIR

try:
    import yaml
except ImportError:  # pragma: no cover - reported by the test itself
    yaml = None

DOCUMENT = SOURCE_DIR / "docs" / "openapi.yaml"
ROUTES_SOURCE = SOURCE_DIR / "audit-api" / "routes.cpp"
ROLES = ("admin", "auditor", "legal", "reviewer")  # bit n of a route's role set is ROLES[n]
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
HEALTH = ("GET", "/api/v1/health")
# The routes without a token: health and the Web Key Directory (public keys, draft-koch-openpgp-webkey-service).
PUBLIC = {HEALTH, ("GET", "/.well-known/openpgpkey/hu/{hash}"), ("GET", "/.well-known/openpgpkey/policy"),
          ("GET", "/.well-known/openpgpkey/{domain}/hu/{hash}"), ("GET", "/.well-known/openpgpkey/{domain}/policy")}
PREFIXES = ("/api/v1/", "/.well-known/openpgpkey/")
PARAM = re.compile(r"\{([^}/]+)\}")


def load_document():
    if yaml is None:
        raise AssertionError("PyYAML is not installed for this Python (install the Debian package python3-yaml)")
    with open(DOCUMENT, encoding="utf-8") as f:
        return yaml.safe_load(f)


def served_routes():
    """{(METHOD, path)} from `postvault api routes`."""
    if not os.path.exists(BINARY):
        raise AssertionError(f"postvault binary not found at {BINARY} (build first, or set POSTVAULT_BIN)")
    result = subprocess.run([BINARY, "api", "routes"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"`postvault api routes` exited {result.returncode}: {result.stderr}")
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    routes = []
    for line in lines:
        method, _, path = line.partition(" ")
        if not path.startswith(PREFIXES):
            raise AssertionError(f"unexpected line from `postvault api routes`: {line!r}")
        routes.append((method.upper(), path.strip()))
    if len(set(routes)) != len(routes):
        raise AssertionError(f"`postvault api routes` lists a route twice: {sorted(routes)}")
    return set(routes)


def source_routes():
    """[(METHOD, path, allowed roles or None for no token, body limit text, handler, handler text)]
    from make_routes in audit-api/routes.cpp."""
    text = ROUTES_SOURCE.read_text(encoding="utf-8")
    constants = {}
    for name, expression in re.findall(r"constexpr\s+unsigned\s+(k\w+)\s*=\s*([^;]+);", text):
        value = 0
        for term in expression.split("|"):
            term = term.strip()
            value |= int(term, 0) if re.fullmatch(r"\d+|0x[0-9a-fA-F]+", term) else constants[term]
        constants[name] = value
    table = re.search(r"make_routes\(.*?\)\s*\{(.*?)\n    \}\n", text, re.S)
    if not table:
        raise AssertionError("make_routes not found in audit-api/routes.cpp (update test_openapi.py)")
    routes = []
    for verb, path, roles, limit, handler in re.findall(
            r'add\(\s*V::(\w+)\s*,\s*"([^"]+)"\s*,\s*(\w+)\s*,\s*(\w+)\s*,\s*&Impl::(\w+)\s*\)', table.group(1)):
        bits = int(roles, 0) if roles.isdigit() else constants[roles]
        allowed = None if bits == 0 else {role for n, role in enumerate(ROLES) if bits & (1 << n)}
        start = re.search(r"\n    Reply " + handler + r"\(Call&[^)]*\)\s*\{", text)
        body = ""
        if start:
            line_end = text.find("\n", start.end())
            if text[start.end():line_end].rstrip().endswith("}"):  # a one-line handler
                body = text[start.end():line_end]
            else:
                end = text.find("\n    }\n", start.end())
                body = text[start.end():end if end >= 0 else len(text)]
        routes.append((verb.rstrip("_").upper(), path, allowed, limit, handler, body))
    if not routes:
        raise AssertionError("no add(V::..., \"/api/v1/...\", ...) lines in make_routes (update test_openapi.py)")
    return routes


def string_list(call_text):
    return {name for name in re.findall(r'"([^"]*)"', call_text)}


class OpenApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.doc = load_document()

    # --- helpers ------------------------------------------------------------------------------
    def resolve(self, node):
        seen = 0
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            self.assertTrue(ref.startswith("#/"), f"only local $refs are used: {ref}")
            node = self.doc
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(node, dict) or part not in node:
                    self.fail(f"$ref {ref} does not resolve")
                node = node[part]
            seen += 1
            self.assertLess(seen, 20, f"$ref loop at {ref}")
        return node

    def operations(self):
        """{(METHOD, path): (operation, path item)}"""
        out = {}
        for path, item in self.doc["paths"].items():
            for method, operation in item.items():
                if method in METHODS:
                    out[(method.upper(), path)] = (operation, item)
        return out

    def parameters(self, operation, item):
        """{(in, name): parameter} with operation-level ones overriding path-level ones."""
        out = {}
        for source in (item.get("parameters", []), operation.get("parameters", [])):
            for parameter in source:
                parameter = self.resolve(parameter)
                out[(parameter["in"], parameter["name"])] = parameter
        return out

    # --- the document -------------------------------------------------------------------------
    def test_document_is_openapi_3(self):
        self.assertIsInstance(self.doc, dict)
        self.assertTrue(str(self.doc.get("openapi", "")).startswith("3."), "openapi: 3.x.y")
        info = self.doc.get("info")
        self.assertIsInstance(info, dict, "info")
        self.assertTrue(info.get("title"), "info.title")
        self.assertTrue(info.get("version"), "info.version")
        self.assertIsInstance(self.doc.get("paths"), dict, "paths")
        self.assertTrue(self.doc["paths"], "paths is empty")
        for path in self.doc["paths"]:
            self.assertTrue(path.startswith(PREFIXES), f"{path} is not under /api/v1 or /.well-known/openpgpkey")

    def test_routes_match_the_binary_exactly(self):
        served = served_routes()
        documented = set(self.operations())
        problems = []
        undocumented = sorted(served - documented)
        not_served = sorted(documented - served)
        if undocumented:
            problems.append("served by `postvault api routes` but not in docs/openapi.yaml: "
                            + ", ".join(f"{m} {p}" for m, p in undocumented))
        if not_served:
            problems.append("in docs/openapi.yaml but not served by `postvault api routes`: "
                            + ", ".join(f"{m} {p}" for m, p in not_served))
        if problems:
            self.fail("; ".join(problems))

    def test_every_operation_has_responses_roles_and_an_id(self):
        ids = set()
        for (method, path), (operation, _) in self.operations().items():
            where = f"{method} {path}"
            responses = operation.get("responses")
            self.assertIsInstance(responses, dict, f"{where}: responses")
            self.assertTrue(responses, f"{where}: no responses")
            self.assertTrue(any(str(code).startswith("2") for code in responses), f"{where}: no 2xx response")
            for code, response in responses.items():
                self.assertRegex(str(code), r"^([1-5]\d\d|[1-5]XX|default)$", f"{where}: response code {code}")
                self.assertTrue(self.resolve(response).get("description"), f"{where} {code}: no description")
            roles = operation.get("x-roles")
            self.assertIsInstance(roles, list, f"{where}: x-roles must be a list")
            self.assertTrue(roles, f"{where}: x-roles is empty")
            self.assertEqual(len(roles), len(set(roles)), f"{where}: x-roles repeats a role")
            self.assertLessEqual(set(roles), set(ROLES), f"{where}: unknown role in x-roles {roles}")
            operation_id = operation.get("operationId")
            self.assertTrue(operation_id, f"{where}: operationId")
            self.assertNotIn(operation_id, ids, f"{where}: operationId {operation_id} used twice")
            ids.add(operation_id)

    def test_security_is_bearer_except_health(self):
        schemes = self.doc.get("components", {}).get("securitySchemes", {})
        bearer = {name for name, scheme in schemes.items()
                  if scheme.get("type") == "http" and str(scheme.get("scheme", "")).lower() == "bearer"}
        self.assertTrue(bearer, "components.securitySchemes needs an HTTP bearer scheme")
        operations = self.operations()
        self.assertTrue(HEALTH in operations, "GET /api/v1/health is not documented")
        for key, (operation, _) in operations.items():
            where = f"{key[0]} {key[1]}"
            security = operation.get("security", self.doc.get("security"))
            if key in PUBLIC:
                self.assertEqual(security, [], f"{where} needs no token: security: []")
                continue
            self.assertTrue(security, f"{where}: no security requirement")
            for requirement in security:
                self.assertTrue(requirement, f"{where}: an empty security requirement makes the token optional")
                self.assertLessEqual(set(requirement), bearer, f"{where}: security must use the bearer scheme")
            self.assertIn("401", {str(c) for c in operation["responses"]}, f"{where}: no 401")
            self.assertIn("403", {str(c) for c in operation["responses"]}, f"{where}: no 403")

    def test_path_parameters_match_the_templates(self):
        for (method, path), (operation, item) in self.operations().items():
            where = f"{method} {path}"
            names = PARAM.findall(path)
            self.assertEqual(len(names), len(set(names)), f"{where}: a path parameter appears twice")
            declared = {name: p for (place, name), p in self.parameters(operation, item).items() if place == "path"}
            for name in names:
                self.assertIn(name, declared, f"{where}: no path parameter '{name}'")
                self.assertIs(declared[name].get("required"), True, f"{where}: path parameter '{name}' must be required")
                self.assertIn("schema", declared[name], f"{where}: path parameter '{name}' has no schema")
            for name in declared:
                self.assertIn(name, names, f"{where}: path parameter '{name}' is not in the path")
            if names:
                self.assertIn("404", {str(c) for c in operation["responses"]}, f"{where}: no 404")

    def test_every_ref_resolves(self):
        def walk(node, where):
            if isinstance(node, dict):
                if "$ref" in node:
                    self.resolve(node)
                for key, value in node.items():
                    walk(value, f"{where}/{key}")
            elif isinstance(node, list):
                for n, value in enumerate(node):
                    walk(value, f"{where}/{n}")
        walk(self.doc, "#")

    def test_errors_use_the_error_schema(self):
        schemas = self.doc.get("components", {}).get("schemas", {})
        self.assertTrue("Error" in schemas, "components.schemas.Error (the error body) is missing")
        error = schemas["Error"]
        self.assertEqual(error.get("required"), ["error"])
        inner = self.resolve(error["properties"]["error"])
        self.assertEqual(set(inner.get("required", [])), {"code", "message"})
        self.assertEqual(inner["properties"]["code"]["type"], "string")
        self.assertEqual(inner["properties"]["message"]["type"], "string")
        for (method, path), (operation, _) in self.operations().items():
            for code, response in operation["responses"].items():
                if not str(code).startswith(("4", "5")):
                    continue
                content = self.resolve(response).get("content", {})
                self.assertIn("application/json", content, f"{method} {path} {code}: error bodies are JSON")
                schema = content["application/json"].get("schema", {})
                self.assertEqual(schema.get("$ref"), "#/components/schemas/Error",
                                 f"{method} {path} {code}: error body is not the Error schema")
            codes = {str(c) for c in operation["responses"]}
            for code in ("405", "413", "503"):
                self.assertIn(code, codes, f"{method} {path}: no {code}")

    # --- against the source -------------------------------------------------------------------
    def source(self):
        if not ROUTES_SOURCE.exists():
            self.skipTest(f"{ROUTES_SOURCE} not found (set POSTVAULT_SOURCE_DIR)")
        return source_routes()

    def test_roles_match_the_route_table(self):
        operations = self.operations()
        for method, path, allowed, _, _, _ in self.source():
            where = f"{method} {path}"
            if (method, path) not in operations:
                self.fail(f"{where} is in make_routes but not documented")
            operation, _ = operations[(method, path)]
            if allowed is None:
                self.assertIn((method, path), PUBLIC, f"{where} takes no token: only health and the WKD should")
                self.assertEqual(operation.get("security"), [], f"{where} takes no token: security: []")
            else:
                self.assertEqual(set(operation.get("x-roles", [])), allowed,
                                 f"{where}: x-roles {operation.get('x-roles')} but routes.cpp allows {sorted(allowed)}")

    def test_parameters_and_fields_match_the_handlers(self):
        operations = self.operations()
        for method, path, _, limit, handler, body in self.source():
            where = f"{method} {path} ({handler})"
            if (method, path) not in operations:
                continue  # test_roles_match_the_route_table reports it
            operation, item = operations[(method, path)]
            self.assertTrue(body, f"{where}: handler not found in routes.cpp")
            query = {name for (place, name) in self.parameters(operation, item) if place == "query"}
            params = re.search(r"check_params\([^{]*\{([^}]*)\}\s*\)", body)
            if params:
                self.assertEqual(query, string_list(params.group(1)),
                                 f"{where}: documented query parameters differ from check_params")
            else:
                self.assertEqual(query, set(), f"{where}: the handler ignores query parameters; none may be documented")

            request_body = operation.get("requestBody")
            codes = {str(c) for c in operation["responses"]}
            if limit == "0":
                self.assertIsNone(request_body, f"{where}: the route accepts no body (limit 0)")
                self.assertNotIn("415", codes, f"{where}: no body, so no 415")
                continue
            self.assertIsNotNone(request_body, f"{where}: the route takes a JSON body; document it")
            self.assertIn("415", codes, f"{where}: no 415 for a JSON body")
            schema = self.resolve(self.resolve(request_body)["content"]["application/json"]["schema"])
            fields = re.search(r"check_fields\([^{]*\{([^}]*)\}\s*\)", body)
            if not fields:
                continue
            self.assertEqual(set(schema.get("properties", {})), string_list(fields.group(1)),
                             f"{where}: documented body fields differ from check_fields")
            self.assertIs(schema.get("additionalProperties"), False,
                          f"{where}: unknown fields are refused: additionalProperties: false")
            required = set(re.findall(r'\bb\.at\("([^"]+)"\)', body))
            self.assertEqual(set(schema.get("required", [])), required,
                             f"{where}: required body fields differ from the handler's b.at(...)")


if __name__ == "__main__":
    unittest.main()
