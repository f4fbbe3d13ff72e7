"""Security properties of template.yaml, the SAM template of the AWS deployment.

Run from the repository root (infra/check-template.sh does, after cfn-lint):

    infra/.venv/bin/python -m unittest discover -s tests/template -v

The template is parsed with cfn-lint's YAML loader, which turns the short forms `!Ref`,
`!GetAtt` and `!Sub` into their long forms (`{"Ref": ...}`, `{"Fn::GetAtt": [...]}`, ...).
These tests read the template only: nothing is built, deployed or sent to AWS.
"""

import json
import unittest
from pathlib import Path

from cfnlint.data import AdditionalSpecs
from cfnlint.decode import decode
from cfnlint.helpers import load_resource

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"

# Object key of the policy in the bucket. The IAM grants on the object name this key, so it
# must match the functions' POLICY_KEY.
POLICY_KEY = "policies.yaml"

# Actions that IAM defines with no resource type, so that they can only be granted on "*".
WILDCARD_ONLY_ACTIONS = {"dynamodb:ListStreams"}

HTTP_FUNCTIONS = ["ToolcallFunction", "AdminFunction", "SessionFunction"]
STREAM_FUNCTIONS = ["StreamFunction", "DetectFunction"]
ALL_FUNCTIONS = HTTP_FUNCTIONS + STREAM_FUNCTIONS

HTTP_ENVIRONMENT = {
    "KEYS_TABLE": {"Ref": "KeysTable"},
    "SESSIONS_TABLE": {"Ref": "SessionsTable"},
    "POLICY_BUCKET": {"Ref": "PolicyBucket"},
    "POLICY_KEY": POLICY_KEY,
    "ADMIN_KEY": {"Ref": "AdminKey"},
    "SESSION_SECRET": {"Ref": "SessionSecret"},
    "TOOL_SERVER_URL": {"Ref": "ToolServerUrl"},
    "CACHE_TTL": {"Ref": "CacheTtl"},
    "AUDIT_WRITES": "once",
    "LOG_FORMAT": "json",
}

STREAM_ENVIRONMENT = {
    "STREAM_STEPS": "forward",
    "SIEM_URL": {"Ref": "SiemUrl"},
    "SIEM_FORMAT": {"Ref": "SiemFormat"},
    "SIEM_TOKEN": {"Ref": "SiemToken"},
    "SIEM_HMAC_SECRET": {"Ref": "SiemHmacSecret"},
    "LOG_FORMAT": "json",
}

DETECT_ENVIRONMENT = {
    "STREAM_STEPS": "detect,alert",
    "ALERT_WEBHOOK_URL": {"Ref": "AlertWebhookUrl"},
    "SESSIONS_TABLE": {"Ref": "SessionsTable"},
    "KEYS_TABLE": {"Ref": "KeysTable"},
    "COUNTERS_TABLE": {"Ref": "CountersTable"},
    "POLICY_BUCKET": {"Ref": "PolicyBucket"},
    "POLICY_KEY": POLICY_KEY,
    "CACHE_TTL": {"Ref": "CacheTtl"},
    "LOG_FORMAT": "json",
}

# (method, path, function) of every HTTP API route.
ROUTES = [
    ("POST", "/mcp/toolcall", "ToolcallFunction"),
    ("POST", "/mcp", "ToolcallFunction"),
    ("GET", "/mcp", "ToolcallFunction"),
    ("DELETE", "/mcp", "ToolcallFunction"),
    ("ANY", "/api/config", "AdminFunction"),
    ("ANY", "/api/policy/{proxy+}", "AdminFunction"),
    ("ANY", "/api/keys", "AdminFunction"),
    ("ANY", "/api/keys/{proxy+}", "AdminFunction"),
    ("GET", "/dash", "AdminFunction"),
    ("GET", "/dash/{proxy+}", "AdminFunction"),
    ("GET", "/openapi.json", "AdminFunction"),
    ("GET", "/api/session/{id}", "SessionFunction"),
    ("GET", "/api/sessions", "SessionFunction"),
    ("GET", "/api/audit", "SessionFunction"),
    ("GET", "/api/alerts", "SessionFunction"),
]

# Every (action, resource) pair that each function's role allows, with resources written as
# "Logical.Attribute" for Fn::GetAtt and as the template string for Fn::Sub. A new grant
# must be added here on purpose.
EXPECTED_GRANTS = {
    "ToolcallFunctionRole": {
        ("logs:CreateLogStream", "ToolcallLogGroup.Arn"),
        ("logs:PutLogEvents", "ToolcallLogGroup.Arn"),
        ("dynamodb:GetItem", "KeysTable.Arn"),
        ("dynamodb:Scan", "KeysTable.Arn"),
        ("dynamodb:PutItem", "SessionsTable.Arn"),
        ("dynamodb:Query", "SessionsTable.Arn"),
        ("s3:GetObject", "${PolicyBucket.Arn}/" + POLICY_KEY),
        ("s3:GetObjectVersion", "${PolicyBucket.Arn}/" + POLICY_KEY),
        ("s3:ListBucket", "PolicyBucket.Arn"),
    },
    "AdminFunctionRole": {
        ("logs:CreateLogStream", "AdminLogGroup.Arn"),
        ("logs:PutLogEvents", "AdminLogGroup.Arn"),
        ("dynamodb:GetItem", "KeysTable.Arn"),
        ("dynamodb:PutItem", "KeysTable.Arn"),
        ("dynamodb:UpdateItem", "KeysTable.Arn"),
        ("dynamodb:DeleteItem", "KeysTable.Arn"),
        ("dynamodb:Scan", "KeysTable.Arn"),
        ("dynamodb:Query", "SessionsTable.Arn"),
        ("dynamodb:Query", "${SessionsTable.Arn}/index/by_day"),
        ("dynamodb:GetItem", "SessionsTable.Arn"),
        ("s3:GetObject", "${PolicyBucket.Arn}/" + POLICY_KEY),
        ("s3:GetObjectVersion", "${PolicyBucket.Arn}/" + POLICY_KEY),
        ("s3:PutObject", "${PolicyBucket.Arn}/" + POLICY_KEY),
        ("s3:ListBucket", "PolicyBucket.Arn"),
        ("s3:ListBucketVersions", "PolicyBucket.Arn"),
    },
    "SessionFunctionRole": {
        ("logs:CreateLogStream", "SessionLogGroup.Arn"),
        ("logs:PutLogEvents", "SessionLogGroup.Arn"),
        ("dynamodb:GetItem", "SessionsTable.Arn"),
        ("dynamodb:Query", "SessionsTable.Arn"),
        ("dynamodb:Query", "${SessionsTable.Arn}/index/by_day"),
        ("dynamodb:Query", "${SessionsTable.Arn}/index/alerts_by_day"),
    },
    "StreamFunctionRole": {
        ("logs:CreateLogStream", "StreamLogGroup.Arn"),
        ("logs:PutLogEvents", "StreamLogGroup.Arn"),
        ("dynamodb:DescribeStream", "SessionsTable.StreamArn"),
        ("dynamodb:GetRecords", "SessionsTable.StreamArn"),
        ("dynamodb:GetShardIterator", "SessionsTable.StreamArn"),
        ("dynamodb:ListStreams", "*"),
        ("sqs:SendMessage", "StreamDeadLetterQueue.Arn"),
    },
    "DetectFunctionRole": {
        ("logs:CreateLogStream", "DetectLogGroup.Arn"),
        ("logs:PutLogEvents", "DetectLogGroup.Arn"),
        ("dynamodb:DescribeStream", "SessionsTable.StreamArn"),
        ("dynamodb:GetRecords", "SessionsTable.StreamArn"),
        ("dynamodb:GetShardIterator", "SessionsTable.StreamArn"),
        ("dynamodb:ListStreams", "*"),
        ("dynamodb:UpdateItem", "CountersTable.Arn"),
        ("dynamodb:PutItem", "SessionsTable.Arn"),
        ("dynamodb:UpdateItem", "KeysTable.Arn"),
        ("s3:GetObject", "${PolicyBucket.Arn}/" + POLICY_KEY),
        ("s3:GetObjectVersion", "${PolicyBucket.Arn}/" + POLICY_KEY),
        ("s3:ListBucket", "PolicyBucket.Arn"),
        ("sqs:SendMessage", "StreamDeadLetterQueue.Arn"),
    },
}

# The one write of a protected resource outside the admin function: the stream function
# sets a model's quarantine, and its grant is limited to that attribute.
QUARANTINE_GRANT = ("DetectFunctionRole", "dynamodb:UpdateItem", "KeysTable.Arn")
QUARANTINE_ATTRIBUTES = ["model_id", "quarantined_until"]


def load_template():
    """Parse template.yaml, raising AssertionError with cfn-lint's messages if it cannot be parsed."""
    template, problems = decode(str(TEMPLATE_PATH))
    if problems:
        raise AssertionError(f"{TEMPLATE_PATH} could not be parsed: " + "; ".join(str(problem) for problem in problems))
    return template


def as_list(value):
    return value if isinstance(value, list) else [value]


def getatt(value):
    """Return `Logical.Attribute` for a Fn::GetAtt value, else None."""
    if not isinstance(value, dict) or "Fn::GetAtt" not in value:
        return None
    target = value["Fn::GetAtt"]
    return target if isinstance(target, str) else ".".join(target)


def resource_name(value):
    """Return a readable form of an IAM Resource entry: "*", "Logical.Attribute" or a Sub string."""
    if isinstance(value, str):
        return value
    attribute = getatt(value)
    if attribute is not None:
        return attribute
    if isinstance(value, dict) and "Fn::Sub" in value:
        return value["Fn::Sub"]
    return json.dumps(value, sort_keys=True)


class TemplateTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.template = load_template()
        cls.resources = cls.template["Resources"]
        cls.parameters = cls.template["Parameters"]
        cls.globals = cls.template.get("Globals", {}).get("Function", {})

    def resource(self, name, expected_type):
        self.assertIn(name, self.resources, f"resource {name} is missing")
        resource = self.resources[name]
        self.assertEqual(resource["Type"], expected_type, f"type of {name}")
        return resource

    def properties(self, name, expected_type):
        return self.resource(name, expected_type).get("Properties", {})

    def function_property(self, name, key):
        """Return a function property, falling back to Globals.Function as SAM does."""
        properties = self.properties(name, "AWS::Serverless::Function")
        return properties.get(key, self.globals.get(key))

    def role_statements(self, role_name):
        role = self.properties(role_name, "AWS::IAM::Role")
        for policy in role.get("Policies", []):
            yield from as_list(policy["PolicyDocument"]["Statement"])

    def all_role_names(self):
        return [name for name, resource in self.resources.items() if resource["Type"] == "AWS::IAM::Role"]

    def grants(self, role_name):
        """Return the (action, resource) pairs that the role's inline policies allow."""
        return {
            (action, resource_name(resource))
            for statement in self.role_statements(role_name)
            for action in as_list(statement["Action"])
            for resource in as_list(statement["Resource"])
        }


class PolicyBucketTest(TemplateTestCase):
    def test_versioning_enabled(self):
        bucket = self.properties("PolicyBucket", "AWS::S3::Bucket")
        self.assertEqual(bucket["VersioningConfiguration"]["Status"], "Enabled")

    def test_default_encryption_sse_s3(self):
        bucket = self.properties("PolicyBucket", "AWS::S3::Bucket")
        rules = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        self.assertEqual(len(rules), 1)
        self.assertEqual(rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"], "AES256")

    def test_public_access_blocked(self):
        block = self.properties("PolicyBucket", "AWS::S3::Bucket")["PublicAccessBlockConfiguration"]
        for setting in ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"]:
            with self.subTest(setting=setting):
                self.assertIs(block.get(setting), True)

    def test_owner_enforced(self):
        rules = self.properties("PolicyBucket", "AWS::S3::Bucket")["OwnershipControls"]["Rules"]
        self.assertEqual([rule["ObjectOwnership"] for rule in rules], ["BucketOwnerEnforced"])

    def test_denies_insecure_transport(self):
        policy = self.properties("PolicyBucketPolicy", "AWS::S3::BucketPolicy")
        self.assertEqual(policy["Bucket"], {"Ref": "PolicyBucket"})
        denials = [
            statement
            for statement in policy["PolicyDocument"]["Statement"]
            if statement["Effect"] == "Deny"
            and statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") in ("false", False)
        ]
        self.assertEqual(len(denials), 1, "expected one Deny statement on aws:SecureTransport false")
        denial = denials[0]
        self.assertEqual(denial["Principal"], "*")
        self.assertEqual(denial["Action"], "s3:*")
        resources = {resource_name(resource) for resource in as_list(denial["Resource"])}
        self.assertEqual(resources, {"PolicyBucket.Arn", "${PolicyBucket.Arn}/*"})


class TablesTest(TemplateTestCase):
    def test_tables_on_demand(self):
        for name in ["KeysTable", "SessionsTable"]:
            with self.subTest(table=name):
                self.assertEqual(self.properties(name, "AWS::DynamoDB::Table")["BillingMode"], "PAY_PER_REQUEST")

    def test_tables_point_in_time_recovery(self):
        for name in ["KeysTable", "SessionsTable"]:
            with self.subTest(table=name):
                specification = self.properties(name, "AWS::DynamoDB::Table")["PointInTimeRecoverySpecification"]
                self.assertIs(specification["PointInTimeRecoveryEnabled"], True)

    def test_tables_encrypted(self):
        for name in ["KeysTable", "SessionsTable"]:
            with self.subTest(table=name):
                self.assertIs(self.properties(name, "AWS::DynamoDB::Table")["SSESpecification"]["SSEEnabled"], True)

    def test_stateful_resources_retained(self):
        for name in ["KeysTable", "SessionsTable", "PolicyBucket"]:
            with self.subTest(resource=name):
                self.assertEqual(self.resources[name].get("DeletionPolicy"), "Retain")
                self.assertEqual(self.resources[name].get("UpdateReplacePolicy"), "Retain")

    def test_keys_table_key_schema(self):
        table = self.properties("KeysTable", "AWS::DynamoDB::Table")
        self.assertEqual(table["KeySchema"], [{"AttributeName": "model_id", "KeyType": "HASH"}])
        self.assertEqual(table["AttributeDefinitions"], [{"AttributeName": "model_id", "AttributeType": "S"}])

    def test_sessions_table_key_schema(self):
        table = self.properties("SessionsTable", "AWS::DynamoDB::Table")
        self.assertEqual(table["KeySchema"], [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
        types = {definition["AttributeName"]: definition["AttributeType"] for definition in table["AttributeDefinitions"]}
        self.assertEqual(types, {"pk": "S", "sk": "S", "day": "S", "alert_day": "S", "time_ns": "N"})

    def test_sessions_table_indexes(self):
        table = self.properties("SessionsTable", "AWS::DynamoDB::Table")
        indexes = {index["IndexName"]: index for index in table["GlobalSecondaryIndexes"]}
        self.assertEqual(sorted(indexes), ["alerts_by_day", "by_day"])
        alerts = indexes["alerts_by_day"]
        self.assertEqual(alerts["KeySchema"], [{"AttributeName": "alert_day", "KeyType": "HASH"}, {"AttributeName": "time_ns", "KeyType": "RANGE"}])
        self.assertEqual(alerts["Projection"], {"ProjectionType": "ALL"})

    def test_counters_table(self):
        table = self.properties("CountersTable", "AWS::DynamoDB::Table")
        self.assertEqual(table["KeySchema"], [{"AttributeName": "pk", "KeyType": "HASH"}])
        self.assertEqual(table["BillingMode"], "PAY_PER_REQUEST")
        self.assertEqual(table["TimeToLiveSpecification"], {"AttributeName": "ttl", "Enabled": True})

    def test_sessions_table_ttl(self):
        ttl = self.properties("SessionsTable", "AWS::DynamoDB::Table")["TimeToLiveSpecification"]
        self.assertEqual(ttl["AttributeName"], "ttl")
        self.assertIs(ttl["Enabled"], True)

    def test_sessions_table_stream_new_image(self):
        stream = self.properties("SessionsTable", "AWS::DynamoDB::Table")["StreamSpecification"]
        self.assertEqual(stream["StreamViewType"], "NEW_IMAGE")

    def test_sessions_table_by_day_index(self):
        indexes = self.properties("SessionsTable", "AWS::DynamoDB::Table")["GlobalSecondaryIndexes"]
        by_day = [index for index in indexes if index["IndexName"] == "by_day"]
        self.assertEqual(len(by_day), 1, "expected one index named by_day")
        self.assertEqual(by_day[0]["KeySchema"], [{"AttributeName": "day", "KeyType": "HASH"}, {"AttributeName": "time_ns", "KeyType": "RANGE"}])
        self.assertEqual(by_day[0]["Projection"]["ProjectionType"], "INCLUDE")
        self.assertEqual(by_day[0]["Projection"]["NonKeyAttributes"], ["session_id"])


class StreamEventSourceTest(TemplateTestCase):
    """Both consumers of the sessions table's stream: the SIEM forwarder and the detectors."""

    def event_sources(self):
        for name in STREAM_FUNCTIONS:
            events = self.properties(name, "AWS::Serverless::Function")["Events"]
            sources = [event["Properties"] for event in events.values() if event["Type"] == "DynamoDB"]
            self.assertEqual(len(sources), 1, f"expected one DynamoDB event on {name}")
            yield name, sources[0]

    def test_reads_sessions_stream(self):
        for name, source in self.event_sources():
            with self.subTest(function=name):
                self.assertEqual(getatt(source["Stream"]), "SessionsTable.StreamArn")
                self.assertEqual(source["StartingPosition"], "LATEST")
                self.assertEqual(source["BatchSize"], 100)
                self.assertEqual(source["MaximumBatchingWindowInSeconds"], 1)

    def test_reports_batch_item_failures(self):
        for name, source in self.event_sources():
            with self.subTest(function=name):
                self.assertIn("ReportBatchItemFailures", source["FunctionResponseTypes"])

    def test_bisects_failed_batches(self):
        for name, source in self.event_sources():
            with self.subTest(function=name):
                self.assertIs(source["BisectBatchOnFunctionError"], True)

    def test_retries_bounded(self):
        for name, source in self.event_sources():
            with self.subTest(function=name):
                # The service default, -1, retries a record until it leaves the stream after 24 hours.
                self.assertGreaterEqual(source["MaximumRetryAttempts"], 0)
                self.assertLessEqual(source["MaximumRetryAttempts"], 10)
                self.assertGreater(source["MaximumRecordAgeInSeconds"], 0)
                self.assertLessEqual(source["MaximumRecordAgeInSeconds"], 24 * 3600)

    def test_failures_go_to_sqs_queue(self):
        for name, source in self.event_sources():
            with self.subTest(function=name):
                destination = getatt(source["DestinationConfig"]["OnFailure"]["Destination"])
                self.assertIsNotNone(destination, "the on-failure destination is not a Fn::GetAtt of a resource")
                queue_name, attribute = destination.split(".", 1)
                self.assertEqual(attribute, "Arn")
                queue = self.properties(queue_name, "AWS::SQS::Queue")
                self.assertIs(queue["SqsManagedSseEnabled"], True)
                self.assertEqual(queue["MessageRetentionPeriod"], 14 * 24 * 3600)


class FunctionsTest(TemplateTestCase):
    def test_runtime_provided_al2023(self):
        for name in ALL_FUNCTIONS:
            with self.subTest(function=name):
                self.assertEqual(self.function_property(name, "Runtime"), "provided.al2023")
                self.assertEqual(self.function_property(name, "Handler"), "bootstrap")

    def test_only_expected_functions(self):
        functions = sorted(name for name, resource in self.resources.items() if resource["Type"] in ("AWS::Serverless::Function", "AWS::Lambda::Function"))
        self.assertEqual(functions, sorted(ALL_FUNCTIONS))

    def test_architecture_from_parameter(self):
        for name in ALL_FUNCTIONS:
            with self.subTest(function=name):
                self.assertEqual(self.function_property(name, "Architectures"), [{"Ref": "Architecture"}])

    def test_architecture_parameter(self):
        parameter = self.parameters["Architecture"]
        self.assertEqual(parameter["Default"], "arm64")
        self.assertEqual(sorted(parameter["AllowedValues"]), ["arm64", "x86_64"])

    def test_built_with_cargo_lambda(self):
        binaries = {
            "ToolcallFunction": "toolcall",
            "AdminFunction": "admin",
            "SessionFunction": "session",
            "StreamFunction": "stream",
            "DetectFunction": "stream",
        }
        for name, binary in binaries.items():
            with self.subTest(function=name):
                metadata = self.resources[name]["Metadata"]
                self.assertEqual(metadata["BuildMethod"], "rust-cargolambda")
                self.assertEqual(metadata["BuildProperties"]["Binary"], binary)
                self.assertEqual(self.function_property(name, "CodeUri"), ".")

    def test_http_function_environment(self):
        for name in HTTP_FUNCTIONS:
            with self.subTest(function=name):
                variables = self.function_property(name, "Environment")["Variables"]
                self.assertEqual(dict(variables), HTTP_ENVIRONMENT)

    def test_stream_function_environment(self):
        variables = self.function_property("StreamFunction", "Environment")["Variables"]
        self.assertEqual(dict(variables), STREAM_ENVIRONMENT)

    def test_detect_function_environment(self):
        variables = self.function_property("DetectFunction", "Environment")["Variables"]
        self.assertEqual(dict(variables), DETECT_ENVIRONMENT)

    def test_globals_set_no_environment(self):
        # Variables in Globals would reach the stream function too, which needs no secrets.
        self.assertNotIn("Environment", self.globals)

    def test_each_function_has_own_log_group(self):
        for name in ALL_FUNCTIONS:
            with self.subTest(function=name):
                log_group = self.function_property(name, "LoggingConfig")["LogGroup"]["Ref"]
                properties = self.properties(log_group, "AWS::Logs::LogGroup")
                self.assertEqual(properties["RetentionInDays"], {"Ref": "LogRetentionDays"})

    def test_routes(self):
        routes = set()
        for name in HTTP_FUNCTIONS:
            events = self.properties(name, "AWS::Serverless::Function")["Events"]
            for event in events.values():
                self.assertEqual(event["Type"], "HttpApi", f"event type on {name}")
                self.assertEqual(event["Properties"]["ApiId"], {"Ref": "HttpApi"}, f"API of a route of {name}")
                routes.add((event["Properties"]["Method"], event["Properties"]["Path"], name))
        self.assertEqual(routes, set(ROUTES))


class ParametersTest(TemplateTestCase):
    def test_secrets_no_echo(self):
        for name in ["AdminKey", "SessionSecret"]:
            with self.subTest(parameter=name):
                self.assertIs(self.parameters[name].get("NoEcho"), True)
                self.assertNotIn("Default", self.parameters[name])

    def test_session_secret_min_length(self):
        self.assertGreaterEqual(self.parameters["SessionSecret"]["MinLength"], 32)

    def test_defaults(self):
        self.assertEqual(self.parameters["CacheTtl"]["Default"], "5s")
        self.assertEqual(self.parameters["StageName"]["Default"], "$default")
        self.assertEqual(self.parameters["LogRetentionDays"]["Default"], 30)
        self.assertEqual(self.parameters["SiemUrl"]["Default"], "")
        self.assertEqual(self.parameters["AlertWebhookUrl"]["Default"], "")


class HttpApiTest(TemplateTestCase):
    def test_stage_throttling_and_access_log(self):
        api = self.properties("HttpApi", "AWS::Serverless::HttpApi")
        self.assertEqual(api["StageName"], {"Ref": "StageName"})
        self.assertEqual(api["DefaultRouteSettings"]["ThrottlingBurstLimit"], {"Ref": "ThrottlingBurstLimit"})
        self.assertEqual(api["DefaultRouteSettings"]["ThrottlingRateLimit"], {"Ref": "ThrottlingRateLimit"})
        log_group = getatt(api["AccessLogSettings"]["DestinationArn"])
        self.assertEqual(log_group, "HttpApiAccessLogGroup.Arn")
        self.assertIn("RetentionInDays", self.properties("HttpApiAccessLogGroup", "AWS::Logs::LogGroup"))

    def test_access_log_has_no_headers(self):
        log_format = self.properties("HttpApi", "AWS::Serverless::HttpApi")["AccessLogSettings"]["Format"]
        json.loads(log_format)
        self.assertNotIn("header", log_format.lower())

    def test_outputs_api_url(self):
        url = self.template["Outputs"]["ApiUrl"]["Value"]
        self.assertIn("Fn::If", url)
        condition, default_stage_url, named_stage_url = url["Fn::If"]
        self.assertEqual(condition, "IsDefaultStage")
        self.assertEqual(default_stage_url, {"Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/"})
        self.assertEqual(named_stage_url, {"Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${StageName}/"})

    def test_outputs_stores(self):
        outputs = self.template["Outputs"]
        self.assertEqual(outputs["KeysTableName"]["Value"], {"Ref": "KeysTable"})
        self.assertEqual(outputs["SessionsTableName"]["Value"], {"Ref": "SessionsTable"})
        self.assertEqual(outputs["PolicyBucketName"]["Value"], {"Ref": "PolicyBucket"})
        self.assertEqual(outputs["StreamDeadLetterQueueUrl"]["Value"], {"Ref": "StreamDeadLetterQueue"})


class IamTest(TemplateTestCase):
    def test_functions_use_own_roles(self):
        # SAM's Policies property would attach AWSLambdaBasicExecutionRole, which allows
        # writing to any log group.
        for name in ALL_FUNCTIONS:
            with self.subTest(function=name):
                properties = self.properties(name, "AWS::Serverless::Function")
                self.assertNotIn("Policies", properties)
                self.assertEqual(getatt(properties["Role"]), f"{name}Role.Arn")

    def test_roles_have_no_managed_policies(self):
        for name in self.all_role_names():
            with self.subTest(role=name):
                self.assertNotIn("ManagedPolicyArns", self.properties(name, "AWS::IAM::Role"))

    def test_roles_trust_only_lambda(self):
        for name in self.all_role_names():
            with self.subTest(role=name):
                trust = self.properties(name, "AWS::IAM::Role")["AssumeRolePolicyDocument"]["Statement"]
                self.assertEqual([statement["Principal"] for statement in trust], [{"Service": "lambda.amazonaws.com"}])

    def test_no_wildcard_resources(self):
        for role in self.all_role_names():
            for statement in self.role_statements(role):
                if "*" not in as_list(statement["Resource"]):
                    continue
                with self.subTest(role=role, sid=statement.get("Sid")):
                    self.assertEqual(set(as_list(statement["Action"])) - WILDCARD_ONLY_ACTIONS, set())

    def test_wildcard_only_actions_have_no_resource_type(self):
        # cfn-lint ships IAM's list of actions and the resource types each action accepts.
        actions = load_resource(AdditionalSpecs, "Policies.json")
        for action in WILDCARD_ONLY_ACTIONS:
            service, name = action.lower().split(":")
            with self.subTest(action=action):
                self.assertEqual(actions[service]["Actions"][name].get("Resources", []), [])

    def test_no_wildcard_actions_or_denies(self):
        for role in self.all_role_names():
            for statement in self.role_statements(role):
                with self.subTest(role=role, sid=statement.get("Sid")):
                    self.assertEqual(statement["Effect"], "Allow")
                    self.assertNotIn("NotAction", statement)
                    self.assertNotIn("NotResource", statement)
                    for action in as_list(statement["Action"]):
                        self.assertNotIn("*", action)

    def test_grants_are_exactly_expected(self):
        self.assertEqual(sorted(self.all_role_names()), sorted(EXPECTED_GRANTS))
        for role, expected in EXPECTED_GRANTS.items():
            with self.subTest(role=role):
                self.assertEqual(self.grants(role), expected)

    def test_only_admin_writes_keys_and_policy(self):
        writes = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "s3:PutObject"}
        protected = {"KeysTable.Arn", "${PolicyBucket.Arn}/" + POLICY_KEY}
        for role in self.all_role_names():
            if role == "AdminFunctionRole":
                continue
            with self.subTest(role=role):
                protected_writes = {
                    (action, resource)
                    for action, resource in self.grants(role)
                    if action in writes and resource in protected and (role, action, resource) != QUARANTINE_GRANT
                }
                self.assertEqual(protected_writes, set())

    def test_quarantine_grant_is_limited_to_its_attribute(self):
        role, action, resource = QUARANTINE_GRANT
        statements = [
            statement
            for statement in self.role_statements(role)
            if action in as_list(statement["Action"]) and resource in [resource_name(item) for item in as_list(statement["Resource"])]
        ]
        self.assertEqual(len(statements), 1)
        condition = statements[0].get("Condition", {})
        self.assertEqual(condition.get("ForAllValues:StringEquals", {}).get("dynamodb:Attributes"), QUARANTINE_ATTRIBUTES)


if __name__ == "__main__":
    unittest.main()
