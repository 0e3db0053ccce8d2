// What the system tools the agent reads on Windows and macOS print, written as the real tools
// print them (reg.exe ends lines with CRLF and starts with a blank line; serial numbers and
// GUIDs are made up), and fake tools that answer with them the way the real ones do.

const crlf = (text: string) => text.replace(/\n/g, "\r\n");

// Windows 11 23H2: `reg query HKLM\SOFTWARE\Microsoft\Cryptography /v MachineGuid /reg:64`.
export const REG_MACHINE_GUID = crlf(`
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Cryptography
    MachineGuid    REG_SZ    6C9F2E8A-41B7-4D3E-9A55-0F3B2C7D18E4

`);

// `reg query "HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing" /reg:64`
// right after a cumulative update was installed (RebootPending is there).
export const REG_CBS_PENDING = crlf(`
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing
    LastTrustTime    REG_BINARY    1E6F1C5A4D2BDB01
    UnattendLoaded    REG_DWORD    0x0
    TrustedInstallerStarted    REG_DWORD    0x1
    LastScavengeTime    REG_BINARY    9A3C62E1B7F1DA01
    LastCleanupTime    REG_BINARY    9A3C62E1B7F1DA01

HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\ApplicabilityEvaluationCache
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\CatalogsToUninstall
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\ComponentDetect
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\DriverOperations
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\Notifications
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\PackageDetect
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\PackageIndex
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\Packages
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\PackagesPending
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\RebootPending
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\SessionsPending
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\Version
`);

// The same key on a machine with nothing pending.
export const REG_CBS_CLEAN = REG_CBS_PENDING.replace(/^.*\\(RebootPending|PackagesPending)\r\n/gm, "");

// `reg query "HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update" /reg:64`
// after Windows Update installed something that needs a restart.
export const REG_WU_REBOOT_REQUIRED = crlf(`
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update
    LastOnlineScanTimeForAppCategory    REG_SZ    2024-11-13 08:12:44
    ForcedReboot    REG_DWORD    0x0

HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\RebootRequired
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\Results
HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\UAS
`);

export const REG_WU_CLEAN = REG_WU_REBOOT_REQUIRED.replace(/^.*\\RebootRequired\r\n/m, "");

// `reg query "HKLM\SYSTEM\CurrentControlSet\Control\Session Manager" /reg:64`, shortened; the
// REG_MULTI_SZ entries are separated by a literal \0, as reg.exe prints them.
const sessionManager = (pending: string) =>
  crlf(`
HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Session Manager
    AutoChkTimeout    REG_DWORD    0xa
    BootExecute    REG_MULTI_SZ    autocheck autochk *
    BootShell    REG_EXPAND_SZ    %SystemRoot%\\system32\\bootim.exe
    CriticalSectionTimeout    REG_DWORD    0x278d00
    ExcludeFromKnownDlls    REG_MULTI_SZ    
    GlobalFlag    REG_DWORD    0x0
    ObjectDirectories    REG_MULTI_SZ    \\Windows\\0\\RPC Control
${pending}    ProcessorControl    REG_DWORD    0x2
    ProtectionMode    REG_DWORD    0x1
    ResourceTimeoutCount    REG_DWORD    0x96

HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\AppCompatCache
HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Configuration Manager
HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\DOS Devices
HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Environment
HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Memory Management
`);
export const REG_SESSION_MANAGER_CLEAN = sessionManager("");
export const REG_SESSION_MANAGER_RENAMES = sessionManager(
  "    PendingFileRenameOperations    REG_MULTI_SZ    \\??\\C:\\Program Files (x86)\\Google\\Update\\1.3.36.372\\psmachine.dll\\0\\0\\??\\C:\\Windows\\SystemTemp\\DriverStore.tmp\\0\n",
);

export const REG_NOT_FOUND = "ERROR: The system was unable to find the specified registry key or value.";

export const CBS_KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing";
export const WU_KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update";
export const SESSION_MANAGER_KEY = "HKLM\\SYSTEM\\CurrentControlSet\\Control\\Session Manager";
export const CRYPTOGRAPHY_KEY = "HKLM\\SOFTWARE\\Microsoft\\Cryptography";

// The name of the recorded output a fake reg.exe prints for `query KEY [/v NAME]`.
export const regOutput = (key: string, value?: string) => `reg.${key.replace(/[^A-Za-z0-9]/g, "_")}${value ? `.v.${value}` : ""}`;

// reg.exe as far as the agent uses it: `query KEY [/v NAME] [/reg:64]` prints the recorded
// listing, or fails like reg.exe when the key (or value) is not there. A file "reg.denied"
// makes every query fail with "Access is denied." (exit status 1), as for a user without rights.
export const FAKE_REG = String.raw`[ -e "$D/reg.denied" ] && { echo "ERROR: Access is denied." >&2; exit 1; }
[ "$1" = query ] || { echo "ERROR: Invalid syntax." >&2; echo 'Type "REG /?" for usage.' >&2; exit 1; }
f="$D/reg.$(printf '%s' "$2" | tr -c 'A-Za-z0-9' '_')"
[ "$3" = /v ] && f="$f.v.$4"
[ -e "$f" ] || { echo "${REG_NOT_FOUND}" >&2; exit 1; }
cat "$f"`;

// icacls.exe: reports success like the real one, or, with a file "icacls.denied", fails like it
// does for a caller without the right to change the ACL. With a file "icacls.plant", another
// account drops a file into the directory while its ACL is being set (the race the agent checks).
export const FAKE_ICACLS = String.raw`if [ -e "$D/icacls.denied" ]; then
  printf '%s: Access is denied.\r\n' "$1" >&2
  printf 'Successfully processed 0 files; Failed processing 1 files\r\n'
  exit 5
fi
[ -e "$D/icacls.plant" ] && : > "$1/agent.key"
printf 'processed file: %s\r\nSuccessfully processed 1 files; Failed processing 0 files\r\n' "$1"`;

// Windows PowerShell running the agent's Get-Acl script: prints the recorded SDDL ("sddl").
export const FAKE_POWERSHELL = String.raw`[ -e "$D/sddl" ] || { printf "Get-Acl : Cannot find path because it does not exist.\r\n" >&2; exit 1; }
cat "$D/sddl"`;

// Get-Acl's .Sddl of a directory as the agent leaves it: protected, SYSTEM and Administrators.
export const SDDL_PRIVATE = "O:BAG:SYD:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)";
// A folder an administrator made with New-Item under %ProgramData%: it inherits Users' read and
// create rights.
export const SDDL_INHERITED = "O:BAG:SYD:AI(A;OICIID;FA;;;SY)(A;OICIID;FA;;;BA)(A;OICIIOID;GA;;;CO)(A;OICIID;0x1200a9;;;BU)(A;CIID;DCLCRPCR;;;BU)";
// A folder a user made there before the agent was installed.
export const SDDL_SQUATTED =
  "O:S-1-5-21-3623811015-3361044348-30300820-1013G:S-1-5-21-3623811015-3361044348-30300820-513D:AI(A;OICIID;FA;;;SY)(A;OICIID;FA;;;BA)(A;OICIID;FA;;;S-1-5-21-3623811015-3361044348-30300820-1013)(A;OICIID;0x1200a9;;;BU)";

// A tool that prints a recorded output named after itself, or fails with what "<tool>.fail"
// holds on stderr (exit status 1).
export const printsRecorded = (name: string) =>
  String.raw`if [ -e "$D/${name}.fail" ]; then cat "$D/${name}.fail" >&2; exit 1; fi
cat "$D/${name}.out"`;

// `/usr/sbin/ioreg -rd1 -c IOPlatformExpertDevice` on an Apple Silicon MacBook Pro (macOS 14).
export const IOREG_PLATFORM = `+-o J314sAP  <class IOPlatformExpertDevice, id 0x100000219, registered, matched, active, busy 0 (2 ms), retain 33>
    {
      "#address-cells" = <02000000>
      "AAPL,phandle" = <01000000>
      "IOBusyInterest" = "IOCommand is not serializable"
      "target-type" = <"J314s">
      "platform-name" = <7436303030000000000000000000000000000000000000000000000000000000>
      "secure-root-prefix" = <"md">
      "name" = <"device-tree">
      "manufacturer" = <"Apple Inc.">
      "compatible" = <"J314sAP","MacBookPro18,3","AppleARM">
      "IOPlatformSerialNumber" = "XQ4C2DW7LN"
      "model" = <"MacBookPro18,3">
      "time-stamp" = <"Mon Jun 12 20:53:21 PDT 2023">
      "IONWInterrupts" = "IONWInterrupts"
      "device_type" = <"bootrom">
      "#size-cells" = <02000000>
      "IOPlatformUUID" = "5A0E1C2B-3D4F-4A6B-8C8D-9E0F1A2B3C4D"
    }
`;

// `/usr/bin/vm_stat` on a 16 GiB Apple Silicon Mac (16 KiB pages).
export const VM_STAT = `Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                                3562.
Pages active:                            362939.
Pages inactive:                          360187.
Pages speculative:                         1490.
Pages throttled:                              0.
Pages wired down:                        109316.
Pages purgeable:                           7062.
"Translation faults":                1259219474.
Pages copy-on-write:                   42096542.
Pages zero filled:                    633788025.
Pages reactivated:                      9380779.
Pages purged:                           5044815.
File-backed pages:                       313389.
Anonymous pages:                         411227.
Pages stored in compressor:              656001.
Pages occupied by compressor:            196329.
Decompressions:                        29906186.
Compressions:                          40939218.
Pageins:                               22735016.
Pageouts:                                193738.
Swapins:                                1012612.
Swapouts:                               1277604.
`;

// `/usr/sbin/sysctl -n vm.swapusage`.
export const SYSCTL_SWAPUSAGE = "total = 2048.00M  used = 1074.25M  free = 973.75M  (encrypted)\n";

// `/sbin/mount` on macOS 14 with an external disk and a NAS share.
export const MAC_MOUNT = `/dev/disk3s1s1 on / (apfs, sealed, local, read-only, journaled)
devfs on /dev (devfs, local, nobrowse)
/dev/disk3s6 on /System/Volumes/VM (apfs, local, noexec, journaled, noatime, nobrowse)
/dev/disk3s2 on /System/Volumes/Preboot (apfs, local, journaled, nobrowse)
/dev/disk3s4 on /System/Volumes/Update (apfs, local, journaled, nobrowse)
/dev/disk1s2 on /System/Volumes/xarts (apfs, local, noexec, journaled, noatime, nobrowse)
/dev/disk1s1 on /System/Volumes/iSCPreboot (apfs, local, journaled, nobrowse)
/dev/disk1s3 on /System/Volumes/Hardware (apfs, local, journaled, nobrowse)
/dev/disk3s5 on /System/Volumes/Data (apfs, local, journaled, nobrowse, protect)
map auto_home on /System/Volumes/Data/home (autofs, automounted, nobrowse)
/dev/disk5s1 on /Volumes/Time Machine (hfs, local, nodev, nosuid, journaled, noowners)
//alice@nas.local/media on /Volumes/media (smbfs, nodev, nosuid, mounted by alice)
`;

// Fedora 40 (dnf 4.21): `dnf -C -q needs-restarting -r` after a kernel and systemd update,
// exit status 1.
export const DNF_NEEDS_RESTARTING_REBOOT = `Core libraries or services have been updated since boot-up:
  * kernel
  * systemd

Reboot is required to fully utilize these updates.
More information: https://access.redhat.com/solutions/27943
`;
// The same with nothing updated since boot, exit status 0.
export const DNF_NEEDS_RESTARTING_CLEAN = `No core libraries or services have been updated since boot-up.
Reboot should not be necessary.
`;

// dnf: answers `-C -q needs-restarting -r` from "dnf.reboot" (exit 1) or as a clean host
// (exit 0); without dnf-plugins-core ("dnf.noplugin") it fails the way dnf does, also with
// exit status 1 but nothing on stdout; with "dnf.broken" it fails like a broken rpmdb.
export const FAKE_DNF = String.raw`[ "$*" = "-C -q needs-restarting -r" ] || { echo "unexpected arguments: $*" >&2; exit 2; }
if [ -e "$D/dnf.noplugin" ]; then
  echo "No such command: needs-restarting. Please use /usr/bin/dnf --help" >&2
  echo "It could be a DNF plugin command, try: \"dnf install 'dnf-command(needs-restarting)'\"" >&2
  exit 1
fi
[ -e "$D/dnf.broken" ] && { echo "Error: rpmdb open failed" >&2; exit 1; }
[ -e "$D/dnf.reboot" ] && { cat "$D/dnf.reboot"; exit 1; }
printf '%s' "${DNF_NEEDS_RESTARTING_CLEAN}"`;

// zypper: `--non-interactive --quiet needs-rebooting` exits 102 (ZYPPER_EXIT_INF_REBOOT_NEEDED)
// with "zypper.reboot", 0 without; with "zypper.locked" another zypper holds the lock (exit 7).
export const FAKE_ZYPPER = String.raw`[ "$*" = "--non-interactive --quiet needs-rebooting" ] || { echo "unexpected arguments: $*" >&2; exit 2; }
if [ -e "$D/zypper.locked" ]; then
  echo "System management is locked by the application with pid 2211 (zypper)." >&2
  echo "Close this application before trying again." >&2
  exit 7
fi
[ -e "$D/zypper.reboot" ] && exit 102
exit 0`;
