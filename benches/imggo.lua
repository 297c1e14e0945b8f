-- wrk script: replays pre-signed, all-distinct ImgGo deliveries (benches/gen_deliveries.py) so
-- hookgate checks every one for real and deduplication never short-circuits; counts non-200s.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local requests = {}
local n, i = 0, 0
bad = 0

function init(args)
  -- args[2]: the signature header, for a peer that reads the same hex HMAC from another one.
  -- args[3] = "close": a new connection (and TLS handshake) per delivery, as most senders do.
  local header = args[2] or "X-ImgGo-Signature"
  local close = args[3] == "close"
  for line in io.lines(args[1]) do
    local sig, body = line:match("^(%x+)\t(.*)$")
    n = n + 1
    local headers = { ["Content-Type"] = "application/json", [header] = sig }
    if close then headers["Connection"] = "close" end
    requests[n] = wrk.format("POST", wrk.path, headers, body)
  end
  -- Threads start far apart in the list, so no two send the same delivery close in time.
  i = math.floor(id * n / (counter > 0 and counter or 2)) % n
end

function request()
  i = i % n + 1
  return requests[i]
end

function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("bad") end
  io.write(string.format("non_200 %d\n", total))
end
