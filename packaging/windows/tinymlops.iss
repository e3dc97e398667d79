; Inno Setup 6 script: Windows installer of the PyInstaller one-folder bundle.
; NOT BUILT HERE (the project's machines run Linux). On a Windows x64 build machine:
;   py -3.11 -m venv build\venv && build\venv\Scripts\pip install ".[package]"
;   build\venv\Scripts\pyinstaller --noconfirm --distpath dist packaging\tinymlops.spec
;   iscc /DAppVersion=0.1.0 packaging\windows\tinymlops.iss      (version: pyproject.toml)
; Output: dist\tinymlops-0.1.0-setup.exe. See packaging/README.md.

#ifndef AppVersion
  #error Pass the version from pyproject.toml: iscc /DAppVersion=X.Y.Z packaging\windows\tinymlops.iss
#endif
#define AppName "Tiny-MLOps Operator"
#define AppExe "tinymlops.exe"

[Setup]
; A fixed AppId keeps upgrades and uninstall tied to one entry in "Apps & features".
AppId={{6F1D3C52-8E0B-4B8A-9B7C-2D3E5A9F1C40}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=Tiny-MLOps operator developers
AppPublisherURL=https://github.com/tinymlops/operator
DefaultDirName={autopf}\TinyMLOps
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
; Per-user install works without admin rights on locked-down plant laptops; admins may choose all users.
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\dist
OutputBaseFilename=tinymlops-{#AppVersion}-setup
SetupIconFile=tinymlops.ico
UninstallDisplayIcon={app}\{#AppExe}
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
; The whole one-folder bundle: tinymlops.exe + _internal\ (Python, Qt, TensorFlow, TFLM, resources\).
Source: "..\..\dist\tinymlops\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExe}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; Tasks: desktopicon

[Run]
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent
