namespace Interposer.Scanner; internal static class Placeholder {}
