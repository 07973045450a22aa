local hs = {status = "Progressing", message = "waiting for the Wingman operator"}
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then
      hs.message = c.message
      if c.status == "True" then
        hs.status = "Healthy"
      elseif c.reason == "Rejected" or c.reason == "Expired" then
        hs.status = "Degraded"
      elseif c.reason == "AwaitingDecision" then
        hs.status = "Suspended"
      end
    end
  end
end
return hs
