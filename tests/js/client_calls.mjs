// matrix-js-sdk calls that Element makes on paths of their own (unstable MSCs), driven
// by tests/client/test_js_sdk_calls.py:
//
//   node client_calls.mjs BASE_URL USER_ID DEVICE_ID ACCESS_TOKEN ROOM_ID OTHER_USER_ID
//
// Prints one JSON line: the room summary (a room preview, MSC3266) and the rooms shared
// with the other user (MSC2666), or ERROR <message>.
import * as sdk from "matrix-js-sdk";

const [baseUrl, userId, deviceId, accessToken, roomId, otherUserId] = process.argv.slice(2);
const client = sdk.createClient({ baseUrl, userId, deviceId, accessToken });
try {
  const summary = await client.getRoomSummary(roomId);
  const mutual = await client._unstable_getSharedRooms(otherUserId);
  console.log(JSON.stringify({ summary, mutual }));
} catch (e) {
  console.log(`ERROR ${e.errcode || ""} ${e.message}`);
}
process.exit(0);
