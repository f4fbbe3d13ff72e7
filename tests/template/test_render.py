"""Properties of render.yaml, the Render Blueprint, and of the Dockerfile it builds.

Run from the repository root (infra/check-template.sh does, with the template tests):

    infra/.venv/bin/python -m unittest discover -s tests/template -v

These tests read the two files only: nothing is built or sent to Render.
"""

import shlex
import unittest
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINT_PATH = ROOT / "render.yaml"
DOCKERFILE_PATH = ROOT / "Dockerfile"

SECRETS = ["ADMIN_KEY", "SESSION_SECRET", "SIEM_TOKEN", "SIEM_HMAC_SECRET"]
PER_DEPLOYMENT = ["TOOL_SERVER_URL", "SIEM_URL"]
# Substrings of a variable name that mark its value as a secret.
SECRET_NAME_PARTS = ["KEY", "SECRET", "TOKEN", "PASSWORD"]


def read_instructions(path):
    """Parse a Dockerfile into (INSTRUCTION, arguments) pairs, joining continued lines."""
    instructions = []
    logical_line = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not logical_line and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            logical_line += stripped[:-1] + " "
            continue
        logical_line += stripped
        keyword, _, arguments = logical_line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        logical_line = ""
    return instructions


def final_stage(instructions):
    """Return the instructions after the last FROM, which make up the image that runs."""
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from + 1 :]


def parse_env(arguments):
    """Parse the `KEY=value ...` form of an ENV instruction into a dict."""
    return dict(pair.split("=", 1) for pair in shlex.split(arguments))


def parse_volume(arguments):
    """Parse a VOLUME instruction in its JSON or its plain form into a list of paths."""
    if arguments.startswith("["):
        return yaml.safe_load(arguments)
    return arguments.split()


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.image = final_stage(read_instructions(DOCKERFILE_PATH))
        cls.env = {}
        for keyword, arguments in cls.image:
            if keyword == "ENV":
                cls.env.update(parse_env(arguments))

    def arguments_of(self, keyword):
        return [arguments for found, arguments in self.image if found == keyword]

    def test_runs_as_non_root_user(self):
        users = self.arguments_of("USER")
        self.assertTrue(users, "the image sets no USER, so it runs as root")
        user = users[-1].split(":")[0]
        self.assertNotIn(user, ("root", "0"))

    def test_exposes_listen_port(self):
        self.assertIn(self.env["PORT"], self.arguments_of("EXPOSE"))

    def test_listens_on_all_interfaces(self):
        self.assertEqual(self.env["HOST"], "0.0.0.0")

    def test_data_dir_is_volume(self):
        volumes = [path for arguments in self.arguments_of("VOLUME") for path in parse_volume(arguments)]
        self.assertIn(self.env["DATA_DIR"], volumes)

    def test_healthcheck_requests_readyz(self):
        healthchecks = self.arguments_of("HEALTHCHECK")
        self.assertEqual(len(healthchecks), 1)
        self.assertIn("/readyz", healthchecks[0])
        self.assertIn("${PORT}", healthchecks[0])

    def test_bakes_in_no_secret(self):
        for keyword in ("ENV", "ARG"):
            for arguments in self.arguments_of(keyword):
                for secret in SECRETS:
                    self.assertNotIn(secret, arguments, f"{keyword} {arguments}")

    def test_entrypoint_serves_by_default(self):
        self.assertEqual(self.arguments_of("ENTRYPOINT"), ['["/usr/local/bin/mcpsec"]'])
        self.assertEqual(self.arguments_of("CMD"), ['["serve"]'])


class BlueprintTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.blueprint = yaml.safe_load(BLUEPRINT_PATH.read_text())
        cls.web_services = [service for service in cls.blueprint["services"] if service.get("type") == "web"]
        cls.service = cls.web_services[0] if cls.web_services else {}
        cls.env_vars = {entry["key"]: entry for entry in cls.service.get("envVars", [])}
        image_env = {}
        for keyword, arguments in final_stage(read_instructions(DOCKERFILE_PATH)):
            if keyword == "ENV":
                image_env.update(parse_env(arguments))
            if keyword == "VOLUME":
                cls.image_volumes = parse_volume(arguments)
        cls.image_env = image_env

    def test_declares_one_web_service(self):
        self.assertEqual(len(self.web_services), 1)

    def test_builds_dockerfile(self):
        self.assertEqual(self.service["runtime"], "docker")
        self.assertEqual(self.service["dockerfilePath"], "./Dockerfile")

    def test_health_check_is_readyz(self):
        self.assertEqual(self.service["healthCheckPath"], "/readyz")

    def test_disk_mounted_at_data_dir(self):
        disk = self.service["disk"]
        self.assertEqual(disk["mountPath"], self.image_env["DATA_DIR"])
        self.assertIn(disk["mountPath"], self.image_volumes)
        self.assertTrue(disk["name"])
        self.assertGreater(disk["sizeGB"], 0)

    def test_secrets_prompted_without_value(self):
        for key in SECRETS + PER_DEPLOYMENT:
            with self.subTest(key=key):
                entry = self.env_vars.get(key)
                self.assertIsNotNone(entry, f"{key} missing from envVars")
                self.assertIs(entry.get("sync"), False)
                self.assertNotIn("value", entry)

    def test_no_literal_secret_value(self):
        for key, entry in self.env_vars.items():
            if any(part in key for part in SECRET_NAME_PARTS):
                with self.subTest(key=key):
                    self.assertNotIn("value", entry)

    def test_port_left_to_render(self):
        self.assertNotIn("PORT", self.env_vars)

    def test_plain_settings(self):
        self.assertEqual(self.env_vars["HOST"]["value"], "0.0.0.0")
        self.assertEqual(self.env_vars["LOG_FORMAT"]["value"], "json")


if __name__ == "__main__":
    unittest.main()
