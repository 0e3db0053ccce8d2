# RedFlag agent installer for Windows. The control plane serves it at /install/windows.ps1 with
# its own URL filled in below; the Tokens page and `redflag tokens create` print the line that
# runs it in an elevated PowerShell (Windows PowerShell 5.1 or PowerShell 7):
#
#   & ([scriptblock]::Create((Invoke-RestMethod 'https://redflag.example:8080/install/windows.ps1'))) -Token '<token>' -Fingerprint <sha256>
#
# It downloads the newest agent release for Windows from the control plane's registry, checks
# that the key signing its manifest has the given fingerprint, that the signed manifest
# describes this release, and the release's size and SHA-256; unpacks it into
# <install dir>\releases\<version>, points <install dir>\current at it (a junction), and hands
# over to `redflag-agent.exe install`, which registers the agent (or keeps the identity it
# has), installs the RedFlagAgent service (WinSW, restarting on failure) and starts it. Running
# it again upgrades in place and keeps the identity. `redflag-agent.exe uninstall` removes it.
#
# Windows PowerShell has no Ed25519, so this script does not check the manifest's signature
# itself: the agent pins the signing keys by the fingerprint at registration, and checks the
# signature of every later release before it installs it (update_agent).
param(
  [string]$Token = '',
  [string]$Fingerprint = '',
  [string]$Server = '@@SERVER@@',
  [switch]$InsecureHttp,
  [string]$CaFile = '',
  [string]$Version = '',
  [string]$InstallDir = (Join-Path $env:ProgramFiles 'RedFlag\agent'),
  [switch]$NoStart
)

$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

# A terminating error, not `exit`: the script runs inside the user's own PowerShell session,
# which `exit` would close.
function Fail([string]$Message) { throw "redflag-install: $Message" }
function Say([string]$Message) { Write-Host "redflag-install: $Message" }

$principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
  Fail 'run it in an elevated PowerShell (Run as administrator): the agent installs updates and runs as a service'
}

switch ($env:PROCESSOR_ARCHITECTURE) {
  'AMD64' { $Platform = 'win32-x64' }
  default { Fail "no agent build for $($env:PROCESSOR_ARCHITECTURE) Windows (builds exist for x64)" }
}

if ($Server -notmatch '^https?://') { Fail "-Server must be an http:// or https:// URL, not '$Server'" }
$loopback = $Server -match '^http://(127\.|localhost(:|/|$)|\[::1\])'
if ($Server -like 'http://*' -and -not $loopback -and -not $InsecureHttp) {
  Fail "refusing plain http:// to ${Server}: anyone on the way could read the token and swap the agent. Serve https, or on a network you trust pass -InsecureHttp (with -Fingerprint)"
}
if ($Token -and -not $Fingerprint) { Fail '-Fingerprint is required with -Token: it is what proves the release and the signing keys come from your control plane' }
$fp = ($Fingerprint -replace ':', '').ToLowerInvariant()
if ($fp -and $fp -notmatch '^[0-9a-f]{64}$') { Fail '-Fingerprint must be 64 hex digits (colons allowed), as the console shows it' }
if ($Version -and $Version -notmatch '^[0-9]+\.[0-9]+\.[0-9]+[0-9A-Za-z.+-]*$') { Fail '-Version must be a release version like 0.2.0' }

# Windows PowerShell 5.1 does not offer TLS 1.2 by default.
[Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12

$work = Join-Path ([IO.Path]::GetTempPath()) ("redflag-install-" + [Guid]::NewGuid().ToString('N'))
New-Item -ItemType Directory -Path $work | Out-Null
try {
  # --- The release and its signed manifest ---------------------------------------------------
  $query = if ($Version) { "?version=$Version" } else { '' }
  try {
    $text = (Invoke-WebRequest -UseBasicParsing -Uri "$Server/downloads/$Platform/manifest$query").Content
  } catch {
    Fail "cannot get the release manifest for $Platform from $Server (is a release for $Platform published? an admin publishes builds with ``redflag releases publish DIR``): $($_.Exception.Message)"
  }
  if ($text -is [byte[]]) { $text = [Text.Encoding]::UTF8.GetString($text) }
  $m = @{}
  foreach ($line in ($text -split "`n")) {
    $i = $line.IndexOf('=')
    if ($i -gt 0 -and -not $m.ContainsKey($line.Substring(0, $i))) { $m[$line.Substring(0, $i)] = $line.Substring($i + 1).Trim() }
  }
  if ($m['size'] -notmatch '^[0-9]{1,12}$' -or $m['sha256'] -notmatch '^[0-9a-f]{64}$') { Fail "the control plane's manifest is malformed" }
  if ($m['platform'] -ne $Platform -and $m['platform'] -ne 'any') { Fail "the control plane offered a build for $($m['platform']), not $Platform" }
  if ($Version -and $m['version'] -ne $Version) { Fail "the control plane offered version $($m['version']), not $Version" }
  $sha = [Security.Cryptography.SHA256]::Create()
  $hex = { param([byte[]]$b) -join ($b | ForEach-Object { $_.ToString('x2') }) }
  $key = [Convert]::FromBase64String($m['public_key'])
  $manifest = [Convert]::FromBase64String($m['manifest'])
  $keyFp = & $hex $sha.ComputeHash($key)
  if ($fp -and $keyFp -ne $fp) { Fail "the control plane's signing key has fingerprint $keyFp, not the $fp you gave: nothing was installed (is something between you and ${Server}?)" }

  # The signed manifest must say what the text says (redflag.v1.ArtifactManifest fields 1-4).
  $field = { param([string]$tag, [string]$s) $b = [Text.Encoding]::UTF8.GetBytes($s); $tag + $b.Length.ToString('x2') + (& $hex $b) }
  $n = [UInt64]$m['size']
  $varint = ''
  while ($n -ge 128) { $varint += (($n % 128) + 128).ToString('x2'); $n = [Math]::Floor($n / 128) }
  $varint += ([int]$n).ToString('x2')
  $expected = (& $field '0a' $m['version']) + (& $field '12' $m['platform']) + '18' + $varint + '2220' + $m['sha256']
  if ((& $hex $manifest) -ne $expected) { Fail 'the signed manifest does not match the release it describes: nothing was installed' }

  # --- Download, check, unpack -----------------------------------------------------------------
  $archive = Join-Path $work 'release.tgz'
  try {
    Invoke-WebRequest -UseBasicParsing -Uri "$Server/downloads/${Platform}?version=$($m['version'])" -OutFile $archive
  } catch {
    Fail "cannot download the agent $($m['version']) for ${Platform}: $($_.Exception.Message)"
  }
  $size = (Get-Item $archive).Length
  if ($size -ne [Int64]$m['size']) { Fail "the download has $size bytes, the signed manifest says $($m['size']): nothing was installed" }
  $got = (Get-FileHash -Algorithm SHA256 -Path $archive).Hash.ToLowerInvariant()
  if ($got -ne $m['sha256']) { Fail "the download's SHA-256 is $got, the signed manifest says $($m['sha256']): nothing was installed" }

  $releases = Join-Path $InstallDir 'releases'
  New-Item -ItemType Directory -Force -Path $releases | Out-Null
  $staging = Join-Path $releases (".$($m['version']).unpack")
  if (Test-Path $staging) { Remove-Item -Recurse -Force $staging }
  New-Item -ItemType Directory -Path $staging | Out-Null
  & "$env:SystemRoot\System32\tar.exe" -xzf $archive -C $staging
  if ($LASTEXITCODE -ne 0) { Fail 'cannot unpack the release (tar.exe, Windows 10 1803 or later): nothing was installed' }
  if (-not (Test-Path (Join-Path $staging 'bin\redflag-agent.exe'))) { Fail 'the release has no bin\redflag-agent.exe: nothing was installed' }
  $release = Join-Path $releases $m['version']
  if (Test-Path $release) { Remove-Item -Recurse -Force $release }
  Move-Item $staging $release
  # `current` is a junction (no symbolic-link privilege needed); removing it leaves its target.
  $current = Join-Path $InstallDir 'current'
  if (Test-Path $current) { cmd.exe /d /c rmdir "$current" | Out-Null }
  New-Item -ItemType Junction -Path $current -Target $release | Out-Null
  Say "agent $($m['version']) for ${Platform}: key fingerprint, manifest and SHA-256 checked; unpacked into $release"

  # --- Hand over to the agent ------------------------------------------------------------------
  $agentArgs = @('install', '--server', $Server, '--install-dir', $InstallDir)
  if ($Fingerprint) { $agentArgs += @('--fingerprint', $Fingerprint) }
  if ($InsecureHttp) { $agentArgs += '--insecure-http' }
  if ($CaFile) { $agentArgs += @('--ca', $CaFile) }
  if ($NoStart) { $agentArgs += '--no-start' }
  $exe = Join-Path $current 'bin\redflag-agent.exe'
  if ($Token) {
    # Through standard input: the token never appears in the agent's command line.
    $Token | & $exe @agentArgs '--token-file' '-'
  } else {
    & $exe @agentArgs
  }
  if ($LASTEXITCODE -ne 0) { Fail "redflag-agent install failed (exit code $LASTEXITCODE); its message is above" }
} finally {
  Remove-Item -Recurse -Force $work -ErrorAction SilentlyContinue
}
