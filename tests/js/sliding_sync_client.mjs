// A matrix-js-sdk client on simplified sliding sync (MSC4186), driven by
// tests/client/test_sliding_sync_jssdk.py over stdin/stdout, one line per step.
//
//   node sliding_sync_client.mjs BASE_URL USER_ID DEVICE_ID ACCESS_TOKEN
//
// Prints READY once the room list has arrived, then answers each command line:
//   wait_message ROOM_ID TEXT   -> GOT_MESSAGE when the room's timeline shows TEXT
//   wait_invite ROOM_ID         -> GOT_INVITE when the room is listed as an invite
//   wait_to_device TYPE         -> GOT_TO_DEVICE when a to-device event of TYPE arrives
//   rooms                       -> ROOMS <json list of room IDs the client knows>
// Every wait gives up after 20 s with TIMEOUT.
import * as readline from "node:readline";
import * as sdk from "matrix-js-sdk";
import { SlidingSync } from "matrix-js-sdk/lib/sliding-sync.js";

const [baseUrl, userId, deviceId, accessToken] = process.argv.slice(2);
const client = sdk.createClient({ baseUrl, userId, deviceId, accessToken });
const requiredState = [
  ["m.room.name", ""],
  ["m.room.member", "$LAZY"],
  ["m.room.member", "$ME"],
  ["m.room.create", ""],
  ["m.room.encryption", ""],
];
const lists = new Map([
  ["all_rooms", { ranges: [[0, 19]], timeline_limit: 10, required_state: requiredState }],
]);
const slidingSync = new SlidingSync(
  baseUrl,
  lists,
  { timeline_limit: 20, required_state: requiredState },
  client,
  5000,
);
const toDevice = [];
client.on(sdk.ClientEvent.ToDeviceEvent, (event) => toDevice.push(event.getType()));

function until(check, done) {
  const started = Date.now();
  const timer = setInterval(() => {
    if (check()) {
      clearInterval(timer);
      console.log(done);
    } else if (Date.now() - started > 20000) {
      clearInterval(timer);
      console.log("TIMEOUT");
    }
  }, 50);
}

slidingSync.on("SlidingSync.Lifecycle", (state, resp, err) => {
  if (err) console.error("sliding sync error:", err.message);
});
let ready = false;
slidingSync.on("SlidingSync.Lifecycle", (state) => {
  if (!ready && state === "COMPLETE") {
    ready = true;
    console.log("READY");
  }
});
await client.startClient({ slidingSync });

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const [command, ...args] = line.trim().split(" ");
  if (command === "wait_message") {
    const [roomId, ...words] = args;
    const text = words.join(" ");
    until(() => {
      const room = client.getRoom(roomId);
      return room?.getLiveTimeline().getEvents().some((e) => e.getContent().body === text);
    }, "GOT_MESSAGE");
  } else if (command === "wait_invite") {
    until(() => client.getRoom(args[0])?.getMyMembership() === "invite", "GOT_INVITE");
  } else if (command === "wait_to_device") {
    until(() => toDevice.includes(args[0]), "GOT_TO_DEVICE");
  } else if (command === "rooms") {
    console.log("ROOMS " + JSON.stringify(client.getRooms().map((r) => r.roomId)));
  } else if (command === "quit") {
    slidingSync.stop();
    client.stopClient();
    process.exit(0);
  }
});
