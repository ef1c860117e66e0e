// matrix-js-sdk's email calls, as Element makes them (Settings > Email addresses,
// "Forgot password?", signing in with an address), driven step by step by
// tests/client/test_email_jssdk.py (the test confirms each mailed link in between):
//
//   node email_client.mjs BASE_URL USER_ID DEVICE_ID ACCESS_TOKEN STEP [ARGS...]
//
// STEP request-add EMAIL SECRET         -> {sid}
//      add SID SECRET PASSWORD          -> {threepids}  (addThreePidOnly with UIA)
//      request-reset EMAIL SECRET       -> {sid}        (no access token)
//      reset SID SECRET NEW_PASSWORD    -> {}           (setPassword by email identity)
//      login EMAIL PASSWORD             -> {user_id}    (m.id.thirdparty)
//      delete EMAIL                     -> {result, threepids}
// Prints one JSON line, or ERROR <errcode> <message>.
import * as sdk from "matrix-js-sdk";

const [baseUrl, userId, deviceId, accessToken, step, ...args] = process.argv.slice(2);
const client = sdk.createClient({ baseUrl, userId, deviceId, accessToken });
const anonymous = sdk.createClient({ baseUrl });
try {
  let out;
  if (step === "request-add") {
    out = await client.requestAdd3pidEmailToken(args[0], args[1], 1);
  } else if (step === "add") {
    const [sid, secret, password] = args;
    const auth = {
      type: "m.login.password",
      identifier: { type: "m.id.user", user: userId },
      password,
    };
    await client.addThreePidOnly({ sid, client_secret: secret, auth });
    out = { threepids: (await client.getThreePids()).threepids };
  } else if (step === "request-reset") {
    out = await anonymous.requestPasswordEmailToken(args[0], args[1], 1);
  } else if (step === "reset") {
    const [sid, secret, newPassword] = args;
    const auth = { type: "m.login.email.identity", threepid_creds: { sid, client_secret: secret } };
    out = await anonymous.setPassword(auth, newPassword);
  } else if (step === "login") {
    const response = await anonymous.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.thirdparty", medium: "email", address: args[0] },
      password: args[1],
    });
    out = { user_id: response.user_id };
  } else if (step === "delete") {
    const result = await client.deleteThreePid("email", args[0]);
    out = { result, threepids: (await client.getThreePids()).threepids };
  } else {
    throw new Error(`unknown step ${step}`);
  }
  console.log(JSON.stringify(out ?? {}));
} catch (e) {
  console.log(`ERROR ${e.errcode || ""} ${e.message}`);
}
process.exit(0);
