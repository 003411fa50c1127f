//! Query-protocol classification (`Action=`), with form bodies as botocore / awscli send them.

use super::test_support::{check_err, check_ok, row};

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded; charset=utf-8");
const SQS: &str = "sqs.us-east-1.amazonaws.com";
const SNS: &str = "sns.us-east-1.amazonaws.com";
const STS: &str = "sts.amazonaws.com";
const IAM: &str = "iam.amazonaws.com";
const EC2: &str = "ec2.us-east-1.amazonaws.com";
const Q: &str = "arn:aws:sqs:us-east-1:123456789012:jobs";

#[test]
fn sqs_query() {
    check_ok(&[
        (
            row(
                "POST",
                SQS,
                "/",
                &[FORM],
                Some("Action=SendMessage&Version=2012-11-05&QueueUrl=https%3A%2F%2Fsqs.us-east-1.amazonaws.com%2F123456789012%2Fjobs&MessageBody=hello+world"),
            ),
            &[("sqs:SendMessage", Q)],
        ),
        (
            row(
                "POST",
                "127.0.0.1:5002",
                "/",
                &[FORM],
                Some("Action=ReceiveMessage&Version=2012-11-05&QueueUrl=http%3A%2F%2F127.0.0.1%3A5002%2F123456789012%2Fjobs&MaxNumberOfMessages=1"),
            ),
            &[("sqs:ReceiveMessage", Q)],
        ),
        // Older clients post to the queue URL itself.
        (row("POST", SQS, "/123456789012/jobs", &[FORM], Some("Action=DeleteMessage&ReceiptHandle=abc")), &[("sqs:DeleteMessage", Q)]),
        (row("GET", SQS, "/?Action=ListQueues&Version=2012-11-05", &[], None), &[("sqs:ListQueues", "*")]),
        (row("POST", SQS, "/", &[FORM], Some("Action=CreateQueue&QueueName=jobs")), &[("sqs:CreateQueue", "arn:aws:sqs:us-east-1:111122223333:jobs")]),
        (row("POST", SQS, "/", &[FORM], Some("Action=GetQueueUrl&QueueName=jobs&QueueOwnerAWSAccountId=123456789012")), &[("sqs:GetQueueUrl", Q)]),
    ]);
}

#[test]
fn sns_sts_iam_ec2() {
    let topic = "arn:aws:sns:us-east-1:123456789012:alerts";
    check_ok(&[
        (
            row("POST", SNS, "/", &[FORM], Some("Action=Publish&Version=2010-03-31&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A123456789012%3Aalerts&Message=hi")),
            &[("sns:Publish", topic)],
        ),
        (
            row("POST", SNS, "/", &[FORM], Some("Action=Subscribe&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A123456789012%3Aalerts&Protocol=sqs&Endpoint=x")),
            &[("sns:Subscribe", topic)],
        ),
        (row("POST", SNS, "/", &[FORM], Some("Action=CreateTopic&Name=alerts")), &[("sns:CreateTopic", "arn:aws:sns:us-east-1:111122223333:alerts")]),
        (
            row("POST", SNS, "/", &[FORM], Some("Action=Unsubscribe&SubscriptionArn=arn%3Aaws%3Asns%3Aus-east-1%3A123456789012%3Aalerts%3A1b2c3d")),
            &[("sns:Unsubscribe", topic)],
        ),
        (row("POST", SNS, "/", &[FORM], Some("Action=ListTopics")), &[("sns:ListTopics", "*")]),
        (row("POST", STS, "/", &[FORM], Some("Action=GetCallerIdentity&Version=2011-06-15")), &[("sts:GetCallerIdentity", "*")]),
        (
            row(
                "POST",
                "sts.us-west-2.amazonaws.com",
                "/",
                &[FORM],
                Some("Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fadmin&RoleSessionName=x"),
            ),
            &[("sts:AssumeRole", "arn:aws:iam::123456789012:role/admin")],
        ),
        (row("POST", STS, "/", &[FORM], Some("Action=GetSessionToken")), &[("sts:GetSessionToken", "*")]),
        (
            row("POST", STS, "/", &[FORM], Some("Action=GetFederationToken&Name=bob")),
            &[("sts:GetFederationToken", "arn:aws:sts::111122223333:federated-user/bob")],
        ),
        (row("POST", IAM, "/", &[FORM], Some("Action=GetUser&Version=2010-05-08&UserName=alice")), &[("iam:GetUser", "arn:aws:iam::111122223333:user/alice")]),
        (row("POST", IAM, "/", &[FORM], Some("Action=GetRole&RoleName=app-role")), &[("iam:GetRole", "arn:aws:iam::111122223333:role/app-role")]),
        (
            row("POST", IAM, "/", &[FORM], Some("Action=AttachRolePolicy&RoleName=app&PolicyArn=arn%3Aaws%3Aiam%3A%3Aaws%3Apolicy%2FReadOnlyAccess")),
            &[("iam:AttachRolePolicy", "arn:aws:iam::111122223333:role/app")],
        ),
        (
            row("POST", IAM, "/", &[FORM], Some("Action=GetPolicy&PolicyArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Apolicy%2Fp")),
            &[("iam:GetPolicy", "arn:aws:iam::123456789012:policy/p")],
        ),
        (row("POST", IAM, "/", &[FORM], Some("Action=CreateAccessKey&UserName=alice")), &[("iam:CreateAccessKey", "arn:aws:iam::111122223333:user/alice")]),
        (row("POST", IAM, "/", &[FORM], Some("Action=ListRoles&MaxItems=100")), &[("iam:ListRoles", "*")]),
        (
            row("POST", "iam.us-gov.amazonaws.com", "/", &[FORM], Some("Action=GetRole&RoleName=r")),
            &[("iam:GetRole", "arn:aws-us-gov:iam::111122223333:role/r")],
        ),
        (
            row("POST", EC2, "/", &[FORM], Some("Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag%3Aapp&Filter.1.Value.1=x")),
            &[("ec2:DescribeInstances", "*")],
        ),
        (
            row("POST", EC2, "/", &[FORM], Some("Action=StopInstances&InstanceId.1=i-0abc&InstanceId.2=i-0def")),
            &[
                ("ec2:StopInstances", "arn:aws:ec2:us-east-1:111122223333:instance/i-0abc"),
                ("ec2:StopInstances", "arn:aws:ec2:us-east-1:111122223333:instance/i-0def"),
            ],
        ),
    ]);
}

#[test]
fn query_requests_that_are_refused() {
    check_err(&[
        (row("POST", SQS, "/", &[FORM], Some("Version=2012-11-05")), "without Action"),
        (row("POST", SQS, "/?Action=ListQueues", &[FORM], Some("Action=SendMessage&QueueUrl=x")), "more than once"),
        (row("POST", SQS, "/", &[FORM], Some("Action=SendMessage&QueueUrl=https%3A%2F%2Fsqs.us-east-1.amazonaws.com%2F123456789012%2Fa&QueueUrl=https%3A%2F%2Fsqs.us-east-1.amazonaws.com%2F123456789012%2Fb")), "more than once"),
        (row("POST", SQS, "/123456789012/other", &[FORM], Some("Action=SendMessage&QueueUrl=https%3A%2F%2Fsqs.us-east-1.amazonaws.com%2F123456789012%2Fjobs")), "request path names"),
        (row("POST", SQS, "/", &[("content-type", "application/json")], Some("Action=ListQueues")), "body and no X-Amz-Target"),
        (row("POST", SQS, "/", &[FORM], Some("Action=Send*")), "not a name"),
        (row("POST", SQS, "/", &[FORM], Some("Action=StartMessageMoveTask&SourceArn=x")), "not supported"),
        (row("POST", SNS, "/", &[FORM], Some("Action=Publish&PhoneNumber=%2B15550100&Message=x")), "phone numbers"),
        (row("POST", SNS, "/", &[FORM], Some("Action=Publish&TopicArn=arn%3Aaws%3Asns%3Aeu-west-1%3A123456789012%3Aa")), "ARN"),
        (row("POST", SNS, "/", &[FORM], Some("Action=Publish&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A123456789012%3A%2A")), "ARN"),
        (row("POST", STS, "/", &[FORM], Some("Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Auser%2Fx")), "ARN"),
        (row("POST", IAM, "/", &[FORM], Some("Action=GetUser")), "without UserName"),
        (row("POST", IAM, "/", &[FORM], Some("Action=GetRole&RoleName=a%2Fb")), "not a valid name"),
        (row("POST", IAM, "/", &[FORM], Some("Action=DeleteAccountAlias&AccountAlias=x")), "not supported"),
        (row("POST", IAM, "/users", &[FORM], Some("Action=ListUsers")), "on path"),
        (row("POST", EC2, "/", &[FORM], Some("Action=RunInstances&ImageId=ami-1&MinCount=1&MaxCount=1")), "not supported"),
        (row("POST", EC2, "/", &[FORM], Some("Action=StopInstances")), "without InstanceId"),
        (row("POST", EC2, "/", &[FORM], Some("Action=StopInstances&InstanceId.1=i-1&InstanceId.3=i-3")), "numbered"),
        (row("POST", EC2, "/", &[FORM], Some("Action=StopInstances&InstanceId.1=vol-1")), "not an instance id"),
        // Services that speak only the JSON protocol need X-Amz-Target; unknown services are refused.
        (row("POST", "kms.us-east-1.amazonaws.com", "/", &[FORM], Some("Action=Decrypt")), "without X-Amz-Target"),
        (row("POST", "lambda.us-east-1.amazonaws.com", "/2015-03-31/functions/f/invocations", &[], None), "without X-Amz-Target"),
    ]);
}

#[test]
fn the_route_account_must_be_an_account_id() {
    use super::{classify, resolve_endpoint, AwsRequest};
    let ep = resolve_endpoint(STS, &[]).unwrap();
    let headers = http::HeaderMap::new();
    let req = AwsRequest { method: &http::Method::POST, path: "/", query: Some("Action=GetCallerIdentity"), headers: &headers, body: None };
    assert!(classify(&req, &ep, "*").is_err());
    assert!(classify(&req, &ep, "12345678901").is_err());
    assert!(classify(&req, &ep, "123456789012").is_ok());
}
