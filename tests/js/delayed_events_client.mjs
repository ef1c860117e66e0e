// matrix-js-sdk's delayed events (MSC4140), as Element Call's MembershipManager uses
// them, driven by tests/client/test_delayed_events_jssdk.py:
//
//   node delayed_events_client.mjs BASE_URL USER_ID DEVICE_ID ACCESS_TOKEN ROOM_ID
//
// Schedules a call-membership-like state event with a 2 s delay and restarts it every
// 300 ms for 2.5 s (the "still connected" heartbeat), then stops (the "crash") and
// waits until the server has sent it; schedules a message and cancels it; prints one
// JSON line of what it saw, or ERROR <message>.
import * as sdk from "matrix-js-sdk";

const [baseUrl, userId, deviceId, accessToken, roomId] = process.argv.slice(2);
const client = sdk.createClient({ baseUrl, userId, deviceId, accessToken });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const stateType = "org.example.call.member";
const stateKey = `_${userId}_${deviceId}`;

async function stateNow() {
  try {
    return await client.getStateEvent(roomId, stateType, stateKey);
  } catch (e) {
    if (e.errcode === "M_NOT_FOUND") return null;
    throw e;
  }
}

try {
  const { delay_id: leaveId } = await client._unstable_sendDelayedStateEvent(
    roomId, { delay: 2000 }, stateType, { left: true }, stateKey,
  );
  const pending = await client._unstable_getDelayedEvents();
  const listed = (pending.delayed_events || []).map((e) => e.delay_id);
  const started = Date.now();
  let restarts = 0;
  while (Date.now() - started < 2500) {
    await client._unstable_updateDelayedEvent(leaveId, "restart");
    restarts += 1;
    await sleep(300);
  }
  const beforeCrash = await stateNow();
  let sent = null;
  const crashed = Date.now();
  while (Date.now() - crashed < 10000 && sent === null) {
    await sleep(100);
    sent = await stateNow();
  }
  const { delay_id: msgId } = await client._unstable_sendDelayedEvent(
    roomId, { delay: 60000 }, null, "m.room.message", { msgtype: "m.text", body: "never" },
  );
  await client._unstable_updateDelayedEvent(msgId, "cancel");
  let afterCancel = null;
  try {
    await client._unstable_updateDelayedEvent(msgId, "send");
  } catch (e) {
    afterCancel = e.errcode;
  }
  const left = await client._unstable_getDelayedEvents();
  console.log(JSON.stringify({
    listed, leaveId, restarts, beforeCrash, sent, afterCancel,
    stillScheduled: (left.delayed_events || []).length,
  }));
} catch (e) {
  console.log(`ERROR ${e.errcode || ""} ${e.message}`);
}
process.exit(0);
