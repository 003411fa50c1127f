# Bootstraps a fresh moto server (started with INITIAL_NO_AUTH_ACTION_COUNT=5, so exactly these
# five calls go unchecked): the broker's IAM user, allowed only to assume the agent role, with an
# access key; and the agent role, trusting that user, allowed s3, dynamodb, sqs, sns and logs. Prints the
# user's access key as JSON. Used by the quickstart and by the integration tests.
import json, os, boto3
iam = boto3.client("iam", endpoint_url=os.environ["MOTO_ENDPOINT"], region_name="us-east-1",
                   aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
user, role, account = os.environ["USER_NAME"], os.environ["ROLE_NAME"], os.environ["ACCOUNT_ID"]
role_arn = f"arn:aws:iam::{account}:role/{role}"
assume = ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]
iam.create_user(UserName=user)
iam.put_user_policy(UserName=user, PolicyName="assume-agent-role", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": assume, "Resource": role_arn}]}))
key = iam.create_access_key(UserName=user)["AccessKey"]
iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": assume,
     "Principal": {"AWS": f"arn:aws:iam::{account}:user/{user}"}}]}))
iam.put_role_policy(RoleName=role, PolicyName="agent-services", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*", "dynamodb:*", "sqs:*", "sns:*", "logs:*"], "Resource": "*"}]}))
print(json.dumps({"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}))
