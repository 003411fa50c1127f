//! JSON-protocol classification (`X-Amz-Target`), with bodies as botocore sends them.

use super::test_support::{check_err, check_ok, row};

const DDB: &str = "dynamodb.us-east-1.amazonaws.com";
const SQS: &str = "sqs.us-east-1.amazonaws.com";
const KMS: &str = "kms.us-east-1.amazonaws.com";
const SM: &str = "secretsmanager.us-east-1.amazonaws.com";
const LOGS: &str = "logs.us-east-1.amazonaws.com";
const KIN: &str = "kinesis.us-east-1.amazonaws.com";
const SSM: &str = "ssm.us-east-1.amazonaws.com";
const J10: (&str, &str) = ("content-type", "application/x-amz-json-1.0");
const J11: (&str, &str) = ("content-type", "application/x-amz-json-1.1");
const T: &str = "arn:aws:dynamodb:us-east-1:111122223333:table/users";

/// Shorthand: the target header and a JSON 1.0 content type.
macro_rules! target {
    ($t:expr) => {
        &[("x-amz-target", $t), J10]
    };
}

#[test]
fn dynamodb() {
    check_ok(&[
        (
            row("POST", DDB, "/", target!("DynamoDB_20120810.PutItem"), Some(r#"{"TableName": "users", "Item": {"id": {"S": "1"}, "name": {"S": "a"}}}"#)),
            &[("dynamodb:PutItem", T)],
        ),
        (
            row("POST", DDB, "/", target!("DynamoDB_20120810.GetItem"), Some(r#"{"TableName": "users", "Key": {"id": {"S": "1"}}, "ConsistentRead": true}"#)),
            &[("dynamodb:GetItem", T)],
        ),
        (
            row(
                "POST",
                "127.0.0.1:5001",
                "/",
                target!("DynamoDB_20120810.UpdateItem"),
                Some(r#"{"TableName":"users","Key":{"id":{"S":"1"}},"UpdateExpression":"SET a = :v"}"#),
            ),
            &[("dynamodb:UpdateItem", T)],
        ),
        (row("POST", DDB, "/", target!("DynamoDB_20120810.DeleteItem"), Some(r#"{"TableName":"users","Key":{}}"#)), &[("dynamodb:DeleteItem", T)]),
        (
            row("POST", DDB, "/", target!("DynamoDB_20120810.Query"), Some(r#"{"TableName":"users","IndexName":"by-name","KeyConditionExpression":"n = :n"}"#)),
            &[("dynamodb:Query", "arn:aws:dynamodb:us-east-1:111122223333:table/users/index/by-name")],
        ),
        (row("POST", DDB, "/", target!("DynamoDB_20120810.Scan"), Some(r#"{"TableName":"users"}"#)), &[("dynamodb:Scan", T)]),
        (
            row("POST", DDB, "/", target!("DynamoDB_20120810.DescribeTable"), Some(r#"{"TableName":"arn:aws:dynamodb:us-east-1:444455556666:table/shared"}"#)),
            &[("dynamodb:DescribeTable", "arn:aws:dynamodb:us-east-1:444455556666:table/shared")],
        ),
        (
            row(
                "POST",
                DDB,
                "/",
                target!("DynamoDB_20120810.CreateTable"),
                Some(r#"{"TableName":"users","KeySchema":[{"AttributeName":"id","KeyType":"HASH"}],"BillingMode":"PAY_PER_REQUEST"}"#),
            ),
            &[("dynamodb:CreateTable", T)],
        ),
        (row("POST", DDB, "/", target!("DynamoDB_20120810.ListTables"), Some("{}")), &[("dynamodb:ListTables", "*")]),
        (row("POST", DDB, "/", target!("DynamoDB_20120810.ListTables"), None), &[("dynamodb:ListTables", "*")]),
        (
            row(
                "POST",
                DDB,
                "/",
                target!("DynamoDB_20120810.BatchWriteItem"),
                Some(r#"{"RequestItems":{"users":[{"PutRequest":{"Item":{}}}],"orders":[{"DeleteRequest":{"Key":{}}}]}}"#),
            ),
            &[("dynamodb:BatchWriteItem", "arn:aws:dynamodb:us-east-1:111122223333:table/orders"), ("dynamodb:BatchWriteItem", T)],
        ),
        (
            row("POST", DDB, "/", target!("DynamoDB_20120810.BatchGetItem"), Some(r#"{"RequestItems":{"users":{"Keys":[{"id":{"S":"1"}}]}}}"#)),
            &[("dynamodb:BatchGetItem", T)],
        ),
        (
            row(
                "POST",
                DDB,
                "/",
                target!("DynamoDB_20120810.TransactWriteItems"),
                Some(
                    r#"{"TransactItems":[{"Put":{"TableName":"users","Item":{}}},{"ConditionCheck":{"TableName":"orders","Key":{},"ConditionExpression":"x"}},{"Update":{"TableName":"users","Key":{}}}]}"#,
                ),
            ),
            &[("dynamodb:PutItem", T), ("dynamodb:ConditionCheckItem", "arn:aws:dynamodb:us-east-1:111122223333:table/orders"), ("dynamodb:UpdateItem", T)],
        ),
        (
            row("POST", DDB, "/", target!("DynamoDB_20120810.TransactGetItems"), Some(r#"{"TransactItems":[{"Get":{"TableName":"users","Key":{}}}]}"#)),
            &[("dynamodb:GetItem", T)],
        ),
        (
            row(
                "POST",
                DDB,
                "/",
                target!("DynamoDB_20120810.TagResource"),
                Some(r#"{"ResourceArn":"arn:aws:dynamodb:us-east-1:111122223333:table/users","Tags":[]}"#),
            ),
            &[("dynamodb:TagResource", T)],
        ),
        (
            row("POST", "dynamodb.cn-north-1.amazonaws.com.cn", "/", target!("DynamoDB_20120810.GetItem"), Some(r#"{"TableName":"users"}"#)),
            &[("dynamodb:GetItem", "arn:aws-cn:dynamodb:cn-north-1:111122223333:table/users")],
        ),
    ]);
}

#[test]
fn sqs_json() {
    let q = "arn:aws:sqs:us-east-1:123456789012:jobs";
    check_ok(&[
        (
            row(
                "POST",
                SQS,
                "/",
                target!("AmazonSQS.SendMessage"),
                Some(r#"{"QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/jobs", "MessageBody": "hi"}"#),
            ),
            &[("sqs:SendMessage", q)],
        ),
        (
            row(
                "POST",
                "127.0.0.1:5002",
                "/",
                target!("AmazonSQS.ReceiveMessage"),
                Some(r#"{"QueueUrl": "http://127.0.0.1:5002/123456789012/jobs", "MaxNumberOfMessages": 1, "MessageAttributeNames": ["All"]}"#),
            ),
            &[("sqs:ReceiveMessage", q)],
        ),
        (
            row(
                "POST",
                SQS,
                "/",
                target!("AmazonSQS.SendMessageBatch"),
                Some(r#"{"QueueUrl":"https://sqs.us-east-1.amazonaws.com/123456789012/jobs","Entries":[{"Id":"1","MessageBody":"a"}]}"#),
            ),
            &[("sqs:SendMessage", q)],
        ),
        (
            row(
                "POST",
                SQS,
                "/",
                target!("AmazonSQS.DeleteMessageBatch"),
                Some(r#"{"QueueUrl":"https://queue.amazonaws.com/123456789012/jobs","Entries":[]}"#),
            ),
            &[("sqs:DeleteMessage", q)],
        ),
        (
            row("POST", SQS, "/", target!("AmazonSQS.GetQueueUrl"), Some(r#"{"QueueName":"jobs.fifo"}"#)),
            &[("sqs:GetQueueUrl", "arn:aws:sqs:us-east-1:111122223333:jobs.fifo")],
        ),
        (
            row("POST", SQS, "/", target!("AmazonSQS.CreateQueue"), Some(r#"{"QueueName":"jobs","Attributes":{}}"#)),
            &[("sqs:CreateQueue", "arn:aws:sqs:us-east-1:111122223333:jobs")],
        ),
        (row("POST", SQS, "/", target!("AmazonSQS.ListQueues"), Some("{}")), &[("sqs:ListQueues", "*")]),
    ]);
}

#[test]
fn kms_secrets_logs_kinesis_ssm() {
    let key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    check_ok(&[
        (
            row(
                "POST",
                KMS,
                "/",
                &[("x-amz-target", "TrentService.Decrypt"), J11],
                Some(r#"{"CiphertextBlob":"AQID","KeyId":"1234abcd-12ab-34cd-56ef-1234567890ab"}"#),
            ),
            &[("kms:Decrypt", key)],
        ),
        (
            row("POST", KMS, "/", &[("x-amz-target", "TrentService.Encrypt"), J11], Some(r#"{"KeyId":"alias/app","Plaintext":"aGk="}"#)),
            &[("kms:Encrypt", "arn:aws:kms:us-east-1:111122223333:alias/app")],
        ),
        (
            row(
                "POST",
                KMS,
                "/",
                &[("x-amz-target", "TrentService.GenerateDataKey"), J11],
                Some(r#"{"KeyId":"arn:aws:kms:us-east-1:444455556666:key/mrk-1","KeySpec":"AES_256"}"#),
            ),
            &[("kms:GenerateDataKey", "arn:aws:kms:us-east-1:444455556666:key/mrk-1")],
        ),
        (
            row(
                "POST",
                KMS,
                "/",
                &[("x-amz-target", "TrentService.ReEncrypt"), J11],
                Some(r#"{"SourceKeyId":"k1","DestinationKeyId":"alias/k2","CiphertextBlob":"AQ=="}"#),
            ),
            &[("kms:ReEncryptFrom", "arn:aws:kms:us-east-1:111122223333:key/k1"), ("kms:ReEncryptTo", "arn:aws:kms:us-east-1:111122223333:alias/k2")],
        ),
        (row("POST", KMS, "/", &[("x-amz-target", "TrentService.ListKeys"), J11], Some("{}")), &[("kms:ListKeys", "*")]),
        (
            row("POST", SM, "/", &[("x-amz-target", "secretsmanager.GetSecretValue"), J11], Some(r#"{"SecretId":"prod/db"}"#)),
            &[("secretsmanager:GetSecretValue", "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-??????")],
        ),
        (
            row(
                "POST",
                SM,
                "/",
                &[("x-amz-target", "secretsmanager.DescribeSecret"), J11],
                Some(r#"{"SecretId":"arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf"}"#),
            ),
            &[("secretsmanager:DescribeSecret", "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf")],
        ),
        (
            row("POST", SM, "/", &[("x-amz-target", "secretsmanager.CreateSecret"), J11], Some(r#"{"Name":"app","SecretString":"x"}"#)),
            &[("secretsmanager:CreateSecret", "arn:aws:secretsmanager:us-east-1:111122223333:secret:app-??????")],
        ),
        (row("POST", SM, "/", &[("x-amz-target", "secretsmanager.ListSecrets"), J11], Some("{}")), &[("secretsmanager:ListSecrets", "*")]),
        (
            row(
                "POST",
                LOGS,
                "/",
                &[("x-amz-target", "Logs_20140328.PutLogEvents"), J11],
                Some(r#"{"logGroupName":"/aws/lambda/fn","logStreamName":"2024/01/31/[$LATEST]abc","logEvents":[]}"#),
            ),
            &[("logs:PutLogEvents", "arn:aws:logs:us-east-1:111122223333:log-group:/aws/lambda/fn:log-stream:2024/01/31/[${$}LATEST]abc")],
        ),
        (
            row("POST", LOGS, "/", &[("x-amz-target", "Logs_20140328.CreateLogGroup"), J11], Some(r#"{"logGroupName":"app"}"#)),
            &[("logs:CreateLogGroup", "arn:aws:logs:us-east-1:111122223333:log-group:app")],
        ),
        (
            row(
                "POST",
                LOGS,
                "/",
                &[("x-amz-target", "Logs_20140328.FilterLogEvents"), J11],
                Some(r#"{"logGroupIdentifier":"arn:aws:logs:us-east-1:111122223333:log-group:app:*"}"#),
            ),
            &[("logs:FilterLogEvents", "arn:aws:logs:us-east-1:111122223333:log-group:app")],
        ),
        (row("POST", LOGS, "/", &[("x-amz-target", "Logs_20140328.DescribeLogGroups"), J11], Some("{}")), &[("logs:DescribeLogGroups", "*")]),
        (
            row("POST", KIN, "/", &[("x-amz-target", "Kinesis_20131202.PutRecord"), J11], Some(r#"{"StreamName":"events","Data":"aGk=","PartitionKey":"p"}"#)),
            &[("kinesis:PutRecord", "arn:aws:kinesis:us-east-1:111122223333:stream/events")],
        ),
        (
            row(
                "POST",
                KIN,
                "/",
                &[("x-amz-target", "Kinesis_20131202.GetRecords"), J11],
                Some(r#"{"ShardIterator":"AAAA","StreamARN":"arn:aws:kinesis:us-east-1:111122223333:stream/events"}"#),
            ),
            &[("kinesis:GetRecords", "arn:aws:kinesis:us-east-1:111122223333:stream/events")],
        ),
        (row("POST", KIN, "/", &[("x-amz-target", "Kinesis_20131202.ListStreams"), J11], Some("{}")), &[("kinesis:ListStreams", "*")]),
        (
            row("POST", SSM, "/", &[("x-amz-target", "AmazonSSM.GetParameter"), J11], Some(r#"{"Name":"/app/db/password:3","WithDecryption":true}"#)),
            &[("ssm:GetParameter", "arn:aws:ssm:us-east-1:111122223333:parameter/app/db/password")],
        ),
        (
            row("POST", SSM, "/", &[("x-amz-target", "AmazonSSM.GetParameters"), J11], Some(r#"{"Names":["/a","b"]}"#)),
            &[("ssm:GetParameters", "arn:aws:ssm:us-east-1:111122223333:parameter/a"), ("ssm:GetParameters", "arn:aws:ssm:us-east-1:111122223333:parameter/b")],
        ),
    ]);
}

#[test]
fn json_requests_that_are_refused() {
    check_err(&[
        (row("POST", DDB, "/", target!("DynamoDB_20120810.GetItem"), Some("{not json")), "not valid JSON"),
        (row("POST", DDB, "/", target!("DynamoDB_20120810.GetItem"), Some(r#"["TableName"]"#)), "not a JSON object"),
        (row("POST", DDB, "/", target!("DynamoDB_20120810.GetItem"), Some(r#"{"Key":{}}"#)), "without TableName"),
        (row("POST", DDB, "/", target!("DynamoDB_20120810.GetItem"), Some(r#"{"TableName":7}"#)), "not a string"),
        (row("POST", DDB, "/", target!("DynamoDB_20120810.GetItem"), Some(r#"{"TableName":"public","TableName":"secret"}"#)), "duplicate key"),
        (row("POST", DDB, "/", target!("DynamoDB_20120810.GetItem"), Some(r#"{"TableName":"*"}"#)), "not a valid name"),
        (row("POST", DDB, "/", target!("DynamoDB_20120810.GetItem"), Some(r#"{"TableName":"arn:aws:dynamodb:us-west-2:111122223333:table/t"}"#)), "ARN"),
        (row("POST", DDB, "/", target!("DynamoDB_20120810.Query"), Some(r#"{"TableName":"t","IndexName":"i/*"}"#)), "not a valid name"),
        (row("POST", DDB, "/", target!("DynamoDB_20120810.ExecuteStatement"), Some(r#"{"Statement":"SELECT * FROM t"}"#)), "not supported"),
        (row("POST", DDB, "/", target!("DynamoDB_20120810.BatchWriteItem"), Some("{}")), "without RequestItems"),
        (
            row(
                "POST",
                DDB,
                "/",
                target!("DynamoDB_20120810.TransactWriteItems"),
                Some(r#"{"TransactItems":[{"Put":{"TableName":"a"},"Delete":{"TableName":"b"}}]}"#),
            ),
            "exactly one",
        ),
        (row("POST", DDB, "/", target!("DynamoDB_20120810.Get*"), Some("{}")), "not a name"),
        (row("POST", DDB, "/", target!("DynamoDBX.GetItem"), Some("{}")), "prefix"),
        (row("POST", DDB, "/", target!("NoDot"), Some("{}")), "PREFIX.Operation"),
        (
            row("POST", DDB, "/", &[("x-amz-target", "DynamoDB_20120810.GetItem"), ("x-amz-target", "DynamoDB_20120810.ListTables")], Some("{}")),
            "more than once",
        ),
        // The target must be for the service the host serves.
        (row("POST", SQS, "/", target!("DynamoDB_20120810.GetItem"), Some(r#"{"TableName":"t"}"#)), "sent to a sqs endpoint"),
        (row("GET", DDB, "/", target!("DynamoDB_20120810.ListTables"), Some("{}")), "JSON-protocol"),
        (row("POST", DDB, "/", &[J10], Some(r#"{"TableName":"t"}"#)), "without X-Amz-Target"),
        (row("POST", SQS, "/?Action=ListQueues", target!("AmazonSQS.SendMessage"), Some("{}")), "Action in the query"),
        (row("POST", SQS, "/", target!("AmazonSQS.SendMessage"), Some(r#"{"MessageBody":"x"}"#)), "without QueueUrl"),
        (
            row("POST", SQS, "/", target!("AmazonSQS.SendMessage"), Some(r#"{"QueueUrl":"https://sqs.eu-west-1.amazonaws.com/123456789012/q"}"#)),
            "not a queue in us-east-1",
        ),
        (row("POST", SQS, "/", target!("AmazonSQS.SendMessage"), Some(r#"{"QueueUrl":"https://sqs.us-east-1.amazonaws.com/1234/q"}"#)), "/ACCOUNT/NAME"),
        (
            row("POST", SQS, "/", target!("AmazonSQS.SendMessage"), Some(r#"{"QueueUrl":"https://sqs.us-east-1.amazonaws.com/123456789012/q*"}"#)),
            "not a valid name",
        ),
        (row("POST", KMS, "/", &[("x-amz-target", "TrentService.Decrypt")], Some(r#"{"CiphertextBlob":"AQID"}"#)), "without KeyId"),
        (row("POST", KMS, "/", &[("x-amz-target", "TrentService.Encrypt")], Some(r#"{"KeyId":"arn:aws:kms:us-east-1:111122223333:key/*"}"#)), "ARN"),
        (row("POST", SM, "/", &[("x-amz-target", "secretsmanager.BatchGetSecretValue")], Some(r#"{"SecretIdList":["a"]}"#)), "not supported"),
        (row("POST", LOGS, "/", &[("x-amz-target", "Logs_20140328.PutLogEvents")], Some(r#"{"logGroupName":"g"}"#)), "without logStreamName"),
        (row("POST", KIN, "/", &[("x-amz-target", "Kinesis_20131202.GetRecords")], Some(r#"{"ShardIterator":"AAAA"}"#)), "without StreamName"),
    ]);
}
